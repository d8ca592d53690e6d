"""Errors the command line turns into one-line messages; torch-free, so ``predict`` can catch them cheaply."""


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or made for another model."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be had (typically: no internet and nothing in the cache)."""


class EngineError(RuntimeError):
    """An inference engine that cannot serve this run (the message says why and what to run)."""


class ExportError(RuntimeError):
    """A run that could not be exported to ONNX, or whose export disagrees with torch."""


class SubmissionError(RuntimeError):
    """A run whose classes cannot be written in the challenge format asked for (the message says which)."""
