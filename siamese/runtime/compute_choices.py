"""The memory formats and precisions a run may ask for; kept apart from :mod:`siamese.runtime.device` so the
configuration and the command line can name them without importing torch."""

COMPUTE_CHOICES = ("auto", "fp32", "channels_last", "bf16")
"""Memory format and precision of every forward pass (:func:`siamese.runtime.device.resolve_compute`):
``fp32``: contiguous (NCHW) float32, PyTorch's default; ``channels_last``: float32 in NHWC, the layout
oneDNN's and cuDNN's convolutions prefer; ``bf16``: channels_last with bfloat16 autocast (no loss scaling
needed); ``auto``: what ``resolve_compute`` picks for the device."""
