"""Cross-validation for small real datasets, scored beside simple reference models in the same folds."""

from siamese.crossval.runner import CVResult, run_cv
from siamese.training.baselines import colour_features

__all__ = ["CVResult", "colour_features", "run_cv"]
