"""Stage 2: turn clean synthetic words into the 1 s windows a live phone call produces.

Each window: a word at a random offset (sometimes cut at an edge), other speech around it, a room,
background babble / music / rings / coloured noise at 0–20 dB SNR, gain, and on most windows a
telephone channel (300–3400 Hz, 8 kHz, G.711 μ-law or A-law round trip).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from triage.audio import TARGET_RATE, decode, encode, resample
from triage.features import FeatureParams

WINDOW = FeatureParams().window_samples  # the model input, ~1 s


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def make_rirs(path: Path, n: int = 48, seed: int = 7) -> np.ndarray:
    """Shoebox room impulse responses (pyroomacoustics), cached at the training rate."""
    if path.exists():
        with np.load(path, allow_pickle=True) as z:
            return list(z["rirs"])
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    rirs = []
    for _ in range(n):
        dims = rng.uniform([2.5, 2.5, 2.3], [9.0, 7.0, 3.5])
        rt60 = rng.uniform(0.15, 0.8)
        absorption, max_order = pra.inverse_sabine(rt60, dims)
        room = pra.ShoeBox(dims, fs=TARGET_RATE, materials=pra.Material(absorption),
                           max_order=min(max_order, 12))
        room.add_source(rng.uniform(0.4, dims - 0.4))
        room.add_microphone(rng.uniform(0.4, dims - 0.4))
        room.compute_rir()
        h = np.asarray(room.rir[0][0], dtype=np.float32)[: int(0.6 * TARGET_RATE)]
        rirs.append(h / (np.abs(h).max() + 1e-9))
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.empty(len(rirs), dtype=object)
    arr[:] = rirs
    np.savez(path, rirs=arr)
    return rirs


_PHONE_SOS = signal.butter(4, [300, 3400], btype="bandpass", fs=TARGET_RATE, output="sos")


def telephone(x: np.ndarray, codec: str) -> np.ndarray:
    """300–3400 Hz band, down to 8 kHz, G.711 round trip, back to 16 kHz (as serving resamples it)."""
    band = signal.sosfilt(_PHONE_SOS, x).astype(np.float32)
    narrow = resample(band, TARGET_RATE, 8000)
    peak = np.abs(narrow).max()
    if peak > 0.99:
        narrow = narrow * (0.99 / peak)
    coded = decode(encode(narrow, codec), codec)
    return resample(coded, 8000, TARGET_RATE)[: len(x)]


@dataclass
class Banks:
    """Everything an augmenter draws from; lists of 16 kHz float32 arrays."""
    speech: list[np.ndarray]  # no-keyword speech (sentences, prompts, other words) for context and babble
    music: list[np.ndarray]  # hold music, rings, alarms
    rirs: list[np.ndarray]


class Augmenter:
    def __init__(self, banks: Banks, rng: np.random.Generator, phone_share: float = 0.65):
        self.b = banks
        self.rng = rng
        self.phone_share = phone_share
        import audiomentations as am  # training only

        self._prosody = am.Compose([
            am.PitchShift(min_semitones=-2.5, max_semitones=2.5, p=0.3),
            am.TimeStretch(min_rate=0.85, max_rate=1.2, leave_length_unchanged=False, p=0.25),
        ])
        self._colour = am.AddColorNoise(min_snr_db=5, max_snr_db=30, p=1.0)
        self._eq = am.SevenBandParametricEQ(min_gain_db=-6, max_gain_db=6, p=0.3)

    def _seeded(self, transform, x: np.ndarray) -> np.ndarray:
        """An audiomentations transform, which draws from Python's and numpy's global generators, seeded
        from this augmenter's: what it makes then depends on its seed alone. Unseeded, the held-out
        keyword-free material (rebuilt on every calibration) was a new draw on every run, and v5.1's
        false alarms on it ranged from 2 to 11 from one draw to another."""
        seed = int(self.rng.integers(2**32))
        random.seed(seed)
        np.random.seed(seed)
        return transform(x, TARGET_RATE)

    # -- pieces ---------------------------------------------------------------------------------
    def _speech_piece(self, n: int) -> np.ndarray:
        src = self.b.speech[self.rng.integers(len(self.b.speech))]
        if len(src) <= n:
            return src
        start = self.rng.integers(0, len(src) - n)
        return src[start: start + n]

    def _loop(self, src: np.ndarray, n: int) -> np.ndarray:
        if len(src) == 0:
            return np.zeros(n, np.float32)
        reps = -(-n // len(src)) + 1
        long = np.tile(src, reps)
        start = self.rng.integers(0, len(long) - n + 1)
        return long[start: start + n]

    def babble(self, n: int) -> np.ndarray:
        """Several voices talking at once, each at unit loudness."""
        voices = [self._loop(self.b.speech[self.rng.integers(len(self.b.speech))], n) for _ in
                  range(self.rng.integers(2, 6))]
        return np.sum([v / _rms(v) for v in voices], axis=0).astype(np.float32)

    def background(self, n: int) -> np.ndarray:
        kind = self.rng.choice(["babble", "music", "colour", "mix"], p=[0.35, 0.25, 0.2, 0.2])
        if kind == "babble":
            return self.babble(n)
        if kind == "music":
            return self._loop(self.b.music[self.rng.integers(len(self.b.music))], n)
        noise = self.rng.standard_normal(n).astype(np.float32) * 0.05
        noise = self._seeded(self._colour, noise)
        if kind == "mix":
            b = self.babble(n)
            noise = noise / _rms(noise) * 0.3 + b / _rms(b)
        return noise.astype(np.float32)

    # -- windows --------------------------------------------------------------------------------
    def place(self, word: np.ndarray, visible: tuple[float, float] = (0.9, 1.0)) -> np.ndarray:
        """Put a word at a random offset in a 1 s window; `visible` is the share of it kept."""
        rng = self.rng
        word = self._seeded(self._prosody, word) if rng.random() < 0.5 else word
        share = rng.uniform(*visible)
        keep = max(1, int(len(word) * share))
        if keep > WINDOW:
            s = rng.integers(0, keep - WINDOW + 1)
            word, keep = word[s: s + WINDOW], WINDOW
        w = np.zeros(WINDOW, np.float32)
        if share < 0.999:  # cut at an edge: the word runs off the window's start or end
            if rng.random() < 0.5:
                piece = word[len(word) - keep:]
                w[:keep] = piece[:WINDOW]
                start, end = 0, keep
            else:
                piece = word[:keep]
                w[WINDOW - keep:] = piece[:WINDOW]
                start, end = WINDOW - keep, WINDOW
        else:
            start = rng.integers(0, WINDOW - keep + 1)
            w[start: start + keep] = word[:keep]
            end = start + keep
        if rng.random() < 0.55:  # other speech before and after, as in a sentence
            level = _rms(word) * 10 ** (rng.uniform(-9, 2) / 20)
            gap_before, gap_after = (int(rng.uniform(0.02, 0.2) * TARGET_RATE) for _ in range(2))
            if start - gap_before > 0:
                piece = self._speech_piece(start - gap_before)
                w[start - gap_before - len(piece): start - gap_before] += piece / (_rms(piece)) * level
            if end + gap_after < WINDOW:
                piece = self._speech_piece(WINDOW - end - gap_after)
                w[end + gap_after: end + gap_after + len(piece)] += piece / (_rms(piece)) * level
        return w

    def speech_window(self) -> np.ndarray:
        """A 1 s window of speech with no keyword."""
        piece = self._speech_piece(WINDOW)
        w = np.zeros(WINDOW, np.float32)
        start = self.rng.integers(0, WINDOW - len(piece) + 1)
        w[start: start + len(piece)] = piece
        return w

    def silence_window(self) -> np.ndarray:
        w = self.background(WINDOW)
        # From digital silence through line hiss to loud background: all of it is "no speech".
        return w / (_rms(w)) * 10 ** (self.rng.uniform(-75, -22) / 20) if self.rng.random() < 0.9 \
            else np.zeros(WINDOW, np.float32)

    def channel(self, w: np.ndarray, snr_db: tuple[float, float] = (0, 20), noise_p: float = 0.8,
                room_p: float = 0.35) -> np.ndarray:
        """Room, background at a random SNR, gain, and (often) the telephone line; any length."""
        rng = self.rng
        speech_rms = _rms(w)
        if rng.random() < room_p and self.b.rirs:
            h = self.b.rirs[rng.integers(len(self.b.rirs))]
            w = signal.fftconvolve(w, h)[: len(w)].astype(np.float32)
            w *= speech_rms / _rms(w)
        if rng.random() < noise_p and speech_rms > 1e-5:
            n = self.background(len(w))
            snr = rng.uniform(*snr_db)
            w = w + n / _rms(n) * speech_rms * 10 ** (-snr / 20)
        w = self._seeded(self._eq, w.astype(np.float32))
        w = w * 10 ** (rng.uniform(-18, 6) / 20) / max(1.0, float(np.abs(w).max()) * 1.25)
        if rng.random() < self.phone_share:
            w = telephone(w, "mulaw" if rng.random() < 0.6 else "alaw")
        return np.clip(w, -1, 1).astype(np.float32)
