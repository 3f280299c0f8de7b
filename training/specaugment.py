"""Augmentation of log-mel windows, drawn afresh for every batch of every epoch.

The audio augmentation (training/augment.py) is fixed once a window is cached; this adds variety the
cache cannot hold, aimed at voices the model never heard:

- a vocal-tract warp: the spectrum read at f / α (α near 1), as a longer or shorter vocal tract
  moves every formant by the same factor (VTLP, Jaitly and Hinton 2013), done on the mel axis;
- SpecAugment masks (Park et al. 2019): a few spans of frames and of mel bands replaced by the
  window's mean, so no single formant or instant can carry a decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from triage.features import FeatureParams, mel_edges


@dataclass(frozen=True)
class SpecAugment:
    warp: float = 0.1  # α drawn uniformly in [1 - warp, 1 + warp]
    time_masks: int = 2
    max_time: int = 10  # frames per mask (of 96)
    freq_masks: int = 2
    max_freq: int = 5  # mel bands per mask (of 40)

    def __call__(self, x: np.ndarray, rng: np.random.Generator, params: FeatureParams) -> np.ndarray:
        """Augmented float32 copies of windows x (batch, frames, mels)."""
        x = self.warped(x.astype(np.float32), rng.uniform(1 - self.warp, 1 + self.warp, len(x)), params)
        fill = x.mean(axis=(1, 2))
        for axis, count, longest in ((1, self.time_masks, self.max_time), (2, self.freq_masks, self.max_freq)):
            size = x.shape[axis]
            for _ in range(count):
                width = rng.integers(0, longest + 1, len(x))
                start = rng.integers(0, size - width + 1)
                at = np.arange(size)
                masked = (at >= start[:, None]) & (at < (start + width)[:, None])  # (batch, size)
                masked = masked[:, :, None] if axis == 1 else masked[:, None, :]
                x = np.where(masked, fill[:, None, None], x)
        return x

    @staticmethod
    def warped(x: np.ndarray, alpha: np.ndarray, params: FeatureParams) -> np.ndarray:
        """Each window's mel bands read at their centre frequency divided by its α (linear
        interpolation between bands; the edge bands repeat past the ends)."""
        centres = mel_edges(params)[1:-1]
        source = np.interp(centres[None, :] / alpha[:, None], centres, np.arange(params.n_mels))  # (batch, mels)
        lo = np.floor(source).astype(np.intp)
        hi = np.minimum(lo + 1, params.n_mels - 1)
        frac = (source - lo).astype(np.float32)[:, None, :]

        def bands(idx: np.ndarray) -> np.ndarray:
            return np.take_along_axis(x, np.broadcast_to(idx[:, None, :], x.shape), axis=2)

        return bands(lo) * (1 - frac) + bands(hi) * frac

