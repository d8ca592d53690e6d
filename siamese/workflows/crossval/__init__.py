"""Cross-validation for small real datasets, scored beside simple reference models in the same folds."""

from siamese.evaluation.reference_features import colour_features
from siamese.workflows.crossval.runner import CVResult, run_cv

__all__ = ["CVResult", "colour_features", "run_cv"]
