"""Colour statistics of an image as a torch computation: the colour baseline's features, in the graph.

One definition serves two users. The cross-validation's ``colour_baseline`` fits logistic regression on
them, and the embedder's optional colour branch (``--colour-stats``) feeds them to its head beside the
backbone's features. On small real dermoscopy sets (PH2: 160 images) colour statistics alone separate
melanoma from nevus well, and a backbone trained from scratch on a hundred images has to rediscover them
through four stages of downsampling; handing them to the head lets metric learning spend the backbone on
what colour does not say. Being torch, the branch travels with the checkpoint and the ONNX export.
"""

from __future__ import annotations

import torch
from torch import nn

HISTOGRAM_BINS = 8
FEATURES_PER_SPACE = 3 * HISTOGRAM_BINS + 3 * 3  # per channel: histogram, then mean, sd and skewness
COLOUR_FEATURES = 2 * FEATURES_PER_SPACE  # RGB and HSV


def pil_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """RGB to HSV on the 0-255 scale as Pillow's ``convert("HSV")`` does it, roundings included (its C code
    mixes float and double, then truncates hue and saturation to integers), so the baseline's features match
    those computed with Pillow. ``rgb`` holds whole numbers; the result is float64."""
    rgb = rgb.float()
    r, g, b = rgb.unbind(1)
    maxc, minc = rgb.amax(dim=1), rgb.amin(dim=1)
    spread = maxc - minc
    grey = spread == 0
    safe = torch.where(grey, torch.ones_like(spread), spread)
    rc, gc, bc = ((maxc - r) / safe).double(), ((maxc - g) / safe).double(), ((maxc - b) / safe).double()
    hue = torch.where(r == maxc, bc - gc, torch.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc)).float()
    hue = hue.double() / 6.0 + 1.0
    hue = torch.floor((hue - torch.floor(hue)).float().double() * 255.0)
    saturation = torch.floor((spread / torch.where(grey, torch.ones_like(maxc), maxc)).double() * 255.0)
    zero = torch.zeros_like(hue)
    return torch.stack([torch.where(grey, zero, hue), torch.where(grey, zero, saturation), maxc.double()], dim=1)


def _space_statistics(channels: torch.Tensor) -> torch.Tensor:
    """Per channel: the share of pixels in each of 8 equal bins of 0-255, then mean, population sd and
    (biased) skewness of the values on the 0-1 scale; skewness is 0 for a flat channel."""
    flat = channels.flatten(2)
    bins = torch.floor(flat / (256 / HISTOGRAM_BINS)).clamp(0, HISTOGRAM_BINS - 1)
    histogram = torch.cat([(bins == k).double().mean(dim=2, keepdim=True) for k in range(HISTOGRAM_BINS)], dim=2)
    values = flat / 255.0
    mean = values.mean(dim=2)
    centred = values - mean.unsqueeze(2)
    m2, m3 = centred.pow(2).mean(dim=2), centred.pow(3).mean(dim=2)
    flat_channel = m2 <= 1e-12
    skewness = torch.where(flat_channel, torch.zeros_like(m3), m3 / torch.where(flat_channel, torch.ones_like(m2),
                                                                                  m2).pow(1.5))
    return torch.cat([histogram.flatten(1), mean, m2.sqrt(), skewness], dim=1)


def colour_statistics(rgb: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` RGB on the 0-255 scale (uint8 or float) to float32 ``(N, 66)``: histograms and moments
    in RGB, then in HSV, computed in float64 (the moments of a few hundred thousand pixels are what
    NumPy's would be)."""
    return torch.cat([_space_statistics(rgb.double()), _space_statistics(pil_hsv(rgb))], dim=1).float()


def check_colour_settings(colour_stats: bool, colour_noise: float) -> None:
    """Refuse settings that would silently do nothing: noise below zero, or noise without the branch."""
    if colour_noise < 0:
        raise ValueError(f"--colour-noise is a standard deviation, at least 0; got {colour_noise}")
    if colour_noise > 0 and not colour_stats:
        raise ValueError("--colour-noise needs --colour-stats (the noise is added to the colour branch)")


class ColourBranch(nn.Module):
    """The embedder's colour statistics, standardised by a batch norm (the baseline's ``StandardScaler``,
    learned from training batches and frozen at evaluation).

    Geometric augmentation leaves colour statistics unchanged, so on a hundred training images they are a
    fingerprint the head can memorise. ``noise`` (sd, in standardised units) is added in training mode
    only: feature noise is the network's counterpart of the baseline's L2 penalty (Bishop, 1995).
    """

    def __init__(self, noise: float = 0.0) -> None:
        super().__init__()
        self.scale = nn.BatchNorm1d(COLOUR_FEATURES)
        self.noise = noise

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        features = self.scale(colour_statistics(rgb))
        if self.training and self.noise > 0:
            features = features + self.noise * torch.randn_like(features)
        return features
