"""Log-mel spectrogram frontend in numpy, for whole clips and for streams, with identical frames.

Matches `librosa.feature.melspectrogram(center=False, power=2, htk=False, norm="slaney")` followed
by `librosa.power_to_db(ref=1.0, amin=1e-10, top_db=None)`. Frames are not centred so that the
frames of a stream are exactly the frames of any 1 s clip cut from it on the hop grid: what the
model sees live is what it saw in training. Training imports this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

AMIN = 1e-10
# Rows per FFT-and-mel pass: 1 000 frames (a 10 s replay block, or 100 live calls' tick) in one pass took
# 7.9 ms here, in passes of 128 3.3 ms, its temporaries staying in cache.
OF_FRAMED_ROWS = 128


@dataclass(frozen=True)
class FeatureParams:
    sample_rate: int = 16_000
    n_fft: int = 512
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_mels: int = 40
    fmin: float = 20.0
    # Phone lines carry nothing above 3.4 kHz: ignoring it makes wideband and phone audio look alike.
    fmax: float = 4000.0
    # The model's input: 96 frames (0.98 s). 96 rather than the 97 frames of a full second because
    # onnxruntime's Resize computes floor(97 * float32(32/97)) = 31 rows, breaking the seed CNN.
    window_samples: int = 15_712

    @classmethod
    def from_dict(cls, d: dict) -> FeatureParams:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown feature parameters {sorted(unknown)}; "
                             f"expected {sorted(cls.__dataclass_fields__)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def n_frames(self, n_samples: int) -> int:
        return 0 if n_samples < self.n_fft else 1 + (n_samples - self.n_fft) // self.hop_length

    @property
    def window_frames(self) -> int:
        return self.n_frames(self.window_samples)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney's auditory-toolbox scale (librosa's default): linear below 1 kHz, log above.
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_edges(p: FeatureParams) -> np.ndarray:
    """The n_mels + 2 frequencies (Hz) of the filters' corners: filter i rises from edge i, peaks at
    edge i + 1 (its centre) and falls to edge i + 2 (librosa.mel_frequencies)."""
    return _mel_to_hz(np.linspace(_hz_to_mel(p.fmin), _hz_to_mel(p.fmax), p.n_mels + 2))


def mel_filterbank(p: FeatureParams) -> np.ndarray:
    """(n_mels, n_fft//2+1) Slaney-normalised triangular filters, as librosa.filters.mel builds them."""
    fft_freqs = np.linspace(0, p.sample_rate / 2, 1 + p.n_fft // 2)
    mel_f = mel_edges(p)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2: p.n_mels + 2] - mel_f[: p.n_mels]))[:, None]
    return weights


class LogMel:
    """Stateless log-mel extractor for whole clips."""

    def __init__(self, params: FeatureParams):
        self.params = params

    @cached_property
    def _window(self) -> np.ndarray:
        p = self.params
        w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(p.win_length) / p.win_length)  # periodic Hann
        left = (p.n_fft - p.win_length) // 2
        return np.pad(w, (left, p.n_fft - p.win_length - left))

    @cached_property
    def _mel_t(self) -> np.ndarray:
        """(bins, n_mels): the filterbank transposed, cut after the last FFT bin any filter weighs (with
        fmax at 4 kHz, half of them), so that the power and the product skip bins that count for nothing."""
        mel_t = mel_filterbank(self.params).T
        return mel_t[: np.nonzero(mel_t.any(axis=1))[0][-1] + 1].copy()

    def frames(self, samples: np.ndarray) -> np.ndarray:
        """(n_frames, n_mels) float32 log-mel dB of float samples at params.sample_rate."""
        return self.of_framed(self.framed(samples))

    def framed(self, samples: np.ndarray) -> np.ndarray:
        """(n_frames, n_fft) windowed frames: the per-call part of `frames`."""
        p = self.params
        x = np.asarray(samples, dtype=np.float64)
        n = p.n_frames(len(x))
        if n == 0:
            return np.zeros((0, p.n_fft), dtype=np.float64)
        strided = np.lib.stride_tricks.as_strided(
            x, shape=(n, p.n_fft), strides=(x.strides[0] * p.hop_length, x.strides[0]), writeable=False)
        return strided * self._window

    def of_framed(self, framed: np.ndarray) -> np.ndarray:
        """Log-mel of windowed frames, which may come from many calls stacked: one FFT and one matrix
        product for all of them (the live engine batches every call's new frames this way)."""
        if len(framed) <= OF_FRAMED_ROWS:
            spec = np.fft.rfft(framed, axis=1)[:, : len(self._mel_t)]
            power = spec.real**2 + spec.imag**2
            return (10.0 * np.log10(np.maximum(power @ self._mel_t, AMIN))).astype(np.float32)
        return np.concatenate([self.of_framed(framed[i: i + OF_FRAMED_ROWS])
                               for i in range(0, len(framed), OF_FRAMED_ROWS)])


class LogMelStream:
    """Incremental log-mel: feed chunks of any length, get each new complete frame exactly once."""

    def __init__(self, params: FeatureParams, extractor: LogMel | None = None):
        self.params = params
        self._extractor = extractor or LogMel(params)
        self._pending = np.zeros(0, dtype=np.float32)  # samples from the next frame's start
        self.frames_emitted = 0

    def feed(self, samples: np.ndarray) -> np.ndarray:
        return self._extractor.of_framed(self.take(samples))

    def take(self, samples: np.ndarray) -> np.ndarray:
        """The windowed frames these samples complete (`feed` without the FFT, to batch it across calls)."""
        buf = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)])
        framed = self._extractor.framed(buf)
        self._pending = buf[len(framed) * self.params.hop_length:]
        self.frames_emitted += len(framed)
        return framed
