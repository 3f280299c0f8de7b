"""Stage 2b: labelled windows cut from running speech exactly as the live spotter sees it.

Each utterance is set between other speech or pauses, passed through a room, background noise and
(often) the telephone line as a whole, turned into log-mel frames by the serving frontend, and cut on
the spotter's 100 ms grid at a random offset. A window is:
- the keyword, when the whole keyword lies inside it (or, for a keyword longer than the window, when
  the window is filled by it);
- `_unknown_`, when it holds at most a sliver of any keyword;
- left out (masked) when it holds part of a keyword: neither the keyword yet nor a fair negative.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile

import numpy as np
from tqdm import tqdm

from training.augment import Augmenter, Banks
from training.speech import Utterance
from triage.features import FeatureParams, LogMel
from triage.keywords import CLASSES, UNKNOWN
from triage.windowing import window_label

HOP_S = 0.1  # the spotter's scoring grid
KEYWORD_WINDOWS = 3  # kept per spoken keyword and pass
MASKED = -1  # the label of a window holding part of a keyword (kept only when asked)


_STATE: dict = {}


def _init(utts: list[Utterance], banks: Banks, params: FeatureParams, seed: int, unknown_per_utt: int,
          masked: bool):
    _STATE.update(utts=utts, banks=banks, params=params, extractor=LogMel(params), seed=seed,
                  unknown_per_utt=unknown_per_utt, masked=masked)


def _context(aug: Augmenter, rng: np.random.Generator, rate: int) -> np.ndarray:
    """What comes before or after a sentence in a call: a pause, or other speech after a pause."""
    pause = np.zeros(int(rng.uniform(0.05, 0.8) * rate), np.float32)
    if rng.random() < 0.5:
        return pause
    piece = aug._speech_piece(int(rng.uniform(0.3, 1.5) * rate))
    piece = piece / (np.abs(piece).max() + 1e-9) * rng.uniform(0.3, 0.8)
    return np.concatenate([piece, pause]) if rng.random() < 0.5 else np.concatenate([pause, piece])


def in_context(utt: Utterance, banks: Banks, rng: np.random.Generator, rate: int):
    """The utterance as a call carries it: between pauses or other speech, through a room, noise and
    (often) the phone line. Returns (16 kHz audio, keyword times in it)."""
    aug = Augmenter(banks, rng)
    before, after = _context(aug, rng, rate), _context(aug, rng, rate)
    x = np.concatenate([before, utt.audio * rng.uniform(0.4, 1.0), after]).astype(np.float32)
    shift = len(before) / rate
    return aug.channel(x), [(k, s + shift, e + shift) for k, s, e in utt.words]


def _windows(i: int) -> tuple[np.ndarray, list[int]]:
    utt: Utterance = _STATE["utts"][i]
    p: FeatureParams = _STATE["params"]
    rng = np.random.default_rng((_STATE["seed"], i))
    rate = p.sample_rate
    x, words = in_context(utt, _STATE["banks"], rng, rate)
    frames = _STATE["extractor"].frames(x)
    hop = round(HOP_S * rate / p.hop_length)
    length, window = p.window_samples / rate, (p.window_frames, p.n_mels)
    keyword, unknown, partial = [], [], []
    for f in range(int(rng.integers(hop)), len(frames) - p.window_frames + 1, hop):
        label = window_label(f * p.hop_length / rate, length, words)
        if label is None:
            if _STATE["masked"]:
                partial.append((frames[f: f + p.window_frames], None))
            continue
        (unknown if label == UNKNOWN else keyword).append((frames[f: f + p.window_frames], label))
    # Neighbouring windows of one keyword differ by a 100 ms shift: a few per keyword carry most of it.
    kept = (_some(keyword, KEYWORD_WINDOWS * len(words), rng) + _some(partial, KEYWORD_WINDOWS * len(words), rng)
            + _some(unknown, _STATE["unknown_per_utt"], rng))
    # One float16 block per utterance crosses from the worker, not one float32 array per window
    x = np.stack([w for w, _ in kept]).astype(np.float16) if kept else np.zeros((0, *window), np.float16)
    return x, [MASKED if label is None else CLASSES.index(label) for _, label in kept]


def _some(items: list, n: int, rng: np.random.Generator) -> list:
    if len(items) <= n:
        return items
    return [items[j] for j in sorted(rng.choice(len(items), size=n, replace=False))]


def build(utts: list[Utterance], banks: Banks, params: FeatureParams, seed: int, passes: int = 2,
          unknown_per_utt: int = 3, workers: int = 2, masked: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(X (N, frames, mels) float16, y class indices) from `passes` differently augmented copies. With
    `masked`, windows holding part of a keyword are kept too (as many as keyword windows), labelled
    MASKED: for training/distill.py, whose teacher labels every window."""
    tasks = list(range(len(utts)))
    ys: list[int] = []
    # A mining round cuts every window of the training speech, gigabytes of them: each utterance's block is
    # spooled to disk as it comes and the whole read back once, so they are never held twice (blocks freed
    # on the heap do not go back to the system, and a join would need them and the result at once).
    with tempfile.TemporaryFile() as spool:
        for k in range(passes):
            with mp.get_context("fork").Pool(workers, initializer=_init, initargs=(
                    utts, banks, params, (seed, k), unknown_per_utt, masked)) as pool:
                for x, labels in tqdm(pool.imap(_windows, tasks, chunksize=16), total=len(tasks),
                                      desc=f"running-speech windows, pass {k + 1}/{passes}", unit="utt"):
                    spool.write(x.tobytes())
                    ys.extend(labels)
        spool.flush()
        spool.seek(0)
        x = np.fromfile(spool, dtype=np.float16).reshape(len(ys), params.window_frames, params.n_mels)
    return x, np.array(ys, dtype=np.int64)
