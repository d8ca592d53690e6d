"""Cross-validation for small real datasets, scored beside simple reference models in the same folds."""

from siamese.crossval.baselines import colour_features
from siamese.crossval.runner import CVResult, run_cv

__all__ = ["CVResult", "colour_features", "run_cv"]
