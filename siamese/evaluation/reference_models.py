"""Every reference model in one registry, served to a single run (``train --references``) and to each
cross-validated fold (``cv --references``, alias ``--baselines``) alike.

A reference model is a small object: its name, what it is fitted on, the per-image features it needs, and how
it scores. The probes (:mod:`siamese.evaluation.reference_features`) are fitted on the images the two stages learnt from
and score the held-out ones from features the caller computes and caches its own way (a run per split, a CV
once over the whole table). ``finetune`` is a network trained by the run itself
(:mod:`siamese.training.finetune`); a CV reads it from each fold's predictions, like the two stages.

This module imports nothing heavy, so the command line can offer the names without loading the training stack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Probe:
    """What a probe is fitted on and scores: features by kind (``colour``, ``imagenet``, ``embedding``),
    ``(N_fit, D)`` and ``(N_scored, D)``, the fit images' class indices ``(N_fit,)``, and the class count."""

    fit: dict[str, np.ndarray]
    y_fit: np.ndarray
    scored: dict[str, np.ndarray]
    n_scored: int
    n_classes: int
    seed: int = 0


@dataclass(frozen=True)
class ReferenceModel:
    """One reference model: ``fits`` says what it learns from; ``features`` the per-image features a probe
    needs; ``score`` a probe's ``(N_scored, n_classes)`` probabilities, or None for a network the run trains."""

    name: str
    fits: str
    features: tuple[str, ...] = ()
    score: Callable[[Probe], np.ndarray] | None = None

    @property
    def trained(self) -> bool:
        """A network the run trains on its images (scored from the run's predictions), not a probe."""
        return self.score is None


def _logistic(kinds: tuple[str, ...]) -> Callable[[Probe], np.ndarray]:
    def score(probe: Probe) -> np.ndarray:
        from siamese.evaluation.reference_features import logistic_probe_proba

        return logistic_probe_proba(np.hstack([probe.fit[k] for k in kinds]), probe.y_fit,
                                    np.hstack([probe.scored[k] for k in kinds]), probe.n_classes, probe.seed)
    return score


def _majority(probe: Probe) -> np.ndarray:
    from siamese.evaluation.reference_features import majority_proba

    return majority_proba(probe.y_fit, probe.n_scored, probe.n_classes)


REFERENCE_MODELS: dict[str, ReferenceModel] = {m.name: m for m in (
    ReferenceModel("colour_baseline", "logistic regression on colour histograms and moments (RGB, HSV)", ("colour",),
                   _logistic(("colour",))),
    ReferenceModel("imagenet_probe", "logistic regression on frozen ImageNet features of the run's backbone",
                   ("imagenet",), _logistic(("imagenet",))),
    ReferenceModel("majority", "the training images' class shares for every image", (), _majority),
    ReferenceModel("colour_embedding", "logistic regression on the colour statistics and the learned embedding",
                   ("colour", "embedding"), _logistic(("colour", "embedding"))),
    ReferenceModel("finetune", "the run's backbone fine-tuned end to end with cross-entropy on its images"),
)}
"""Every reference model by name, in the order tables list them."""


def check_references(names: Sequence[str]) -> None:
    """Raises ValueError naming any reference model that is not in :data:`REFERENCE_MODELS`."""
    unknown = sorted(set(names) - set(REFERENCE_MODELS))
    if "none" in unknown:
        raise ValueError(f"--references none (references: [none] in a file) means no reference model and stands "
                         f"alone; got {list(names)}")
    if unknown:
        raise ValueError(f"unknown reference model(s) {unknown}; choose from {list(REFERENCE_MODELS)}")


def probe_scores(names: Sequence[str], features: Callable[[str], tuple[np.ndarray, np.ndarray]], y_fit: np.ndarray,
                 n_scored: int, n_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The probabilities of every probe in ``names`` (trained models are skipped: their caller has them).
    ``features(kind)`` gives one kind's ``(fit, scored)`` arrays; each kind is asked for once, and only when a
    probe needs it. Raises ValueError naming an unknown model."""
    check_references(names)
    probes = [REFERENCE_MODELS[n] for n in names if not REFERENCE_MODELS[n].trained]
    kinds = list(dict.fromkeys(k for m in probes for k in m.features))
    pairs = {k: features(k) for k in kinds}
    probe = Probe({k: v[0] for k, v in pairs.items()}, y_fit, {k: v[1] for k, v in pairs.items()}, n_scored,
                  n_classes, seed)
    return {m.name: m.score(probe) for m in probes}
