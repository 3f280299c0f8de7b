"""One label per short clip: which keyword it holds, or `_unknown_` speech, or `_silence_`.

Pure: samples in, label out. A clip shorter than the model's window is centred in silence; a longer
one is scanned on the streaming hop grid and its most keyword-like window decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from triage.keywords import SILENCE, UNKNOWN
from triage.model import KeywordModel


@dataclass(frozen=True)
class ClipLabel:
    label: str
    confidence: float


def windows_of(model: KeywordModel, samples: np.ndarray) -> np.ndarray:
    """(W, frames, mels): the clip centred in one window, or every hop-spaced window plus the last."""
    p = model.features
    n = p.window_samples
    x = np.asarray(samples, dtype=np.float32)
    if len(x) <= n:
        left = (n - len(x)) // 2
        return model.extractor.frames(np.pad(x, (left, n - len(x) - left)))[None]
    hop = round((model.streaming.hop_s if model.streaming else 0.1) * p.sample_rate)
    frames = model.extractor.frames(x)
    hop_frames = max(1, hop // p.hop_length)
    starts = list(range(0, len(frames) - p.window_frames + 1, hop_frames))
    if starts[-1] != len(frames) - p.window_frames:
        starts.append(len(frames) - p.window_frames)
    return np.stack([frames[s: s + p.window_frames] for s in starts])


def classify(model: KeywordModel, samples: np.ndarray) -> ClipLabel:
    # The full model on every window, the gate bypassed: a gate saves a live call's CPU by counting the
    # windows it turns away as `_unknown_`, which would take every `_silence_` clip for speech and overrule
    # the full model's label on keyword clips the gate doubts; a clip is labelled once.
    probs = model.predict_full(windows_of(model, samples))
    kw_idx = [i for i, c in enumerate(model.classes) if c in model.keywords]
    best = int(np.argmax(probs[:, kw_idx].max(axis=1)))
    top = int(np.argmax(probs[best]))
    if model.classes[top] in model.keywords:
        return ClipLabel(model.classes[top], float(probs[best, top]))
    # No window is a keyword: speech or silence, by their mean over the clip.
    mean = probs.mean(axis=0)
    i = int(speech_or_silence(mean[None], model.classes, model.silence_weight)[0])
    return ClipLabel(model.classes[i], float(mean[i]))


def speech_or_silence(probs: np.ndarray, classes: tuple[str, ...], silence_weight: float) -> np.ndarray:
    """(N, classes) probabilities → for each row the index of `_unknown_` or `_silence_`, whichever is likelier
    once `_silence_` counts `silence_weight` times (the manifest's `clips`, chosen on dev voices by
    training/clips.py: background babble alone reads as speech to the network far more often than any
    speech reads as silence)."""
    rest = [classes.index(c) for c in (UNKNOWN, SILENCE) if c in classes]
    weights = np.array([silence_weight if classes[i] == SILENCE else 1.0 for i in rest])
    return np.array(rest)[np.argmax(probs[:, rest] * weights, axis=1)]
