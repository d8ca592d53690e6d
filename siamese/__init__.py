"""siamese-lesions: metric learning and leakage-free evaluation for dermoscopic lesion images."""

__version__ = "0.1.0"
