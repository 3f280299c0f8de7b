"""Accuracy of a model on held-out voices, per condition, class and voice; confusion-matrix plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.dataset import CONDITIONS, EvalSet
from triage.classify import speech_or_silence
from triage.keywords import CLASSES, KEYWORDS, UNKNOWN

_KW_IDX = np.arange(len(KEYWORDS))


def labels(probs: np.ndarray, silence_weight: float = 1.0) -> np.ndarray:
    """Each one-window clip's class as `triage classify` labels it: the likeliest class, and where that is
    no keyword, `_unknown_` or `_silence_` with the manifest's silence weight."""
    pred = probs.argmax(axis=1)
    no_keyword = ~np.isin(pred, _KW_IDX)
    pred[no_keyword] = speech_or_silence(probs[no_keyword], CLASSES, silence_weight)
    return pred


def evaluate(predict, ev: EvalSet, silence_weight: float = 1.0) -> dict:
    """`predict(windows) → probabilities`; returns a JSON-able report."""
    report: dict = {"n_windows": int(len(ev.y)), "silence_weight": silence_weight, "conditions": {}}
    voices = sorted(set(ev.voice) - {"none"})
    for cond in CONDITIONS:
        pred = labels(predict(ev.x[cond].astype(np.float32)), silence_weight)
        ok = pred == ev.y
        cm = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
        np.add.at(cm, (ev.y, pred), 1)
        unk = ev.y == CLASSES.index(UNKNOWN)
        near = ev.near_miss & unk
        report["conditions"][cond] = {
            "accuracy": float(ok.mean()),
            "keyword_accuracy": float(ok[ev.y < len(KEYWORDS)].mean()),
            "per_class": {c: float(ok[ev.y == i].mean()) for i, c in enumerate(CLASSES) if (ev.y == i).any()},
            "per_voice": {v: float(ok[np.array(ev.voice) == v].mean()) for v in voices},
            "unknown_taken_for_keyword": float(np.isin(pred[unk], _KW_IDX).mean()) if unk.any() else None,
            "near_miss_taken_for_keyword": float(np.isin(pred[near], _KW_IDX).mean()) if near.any() else None,
            "confusion": cm.tolist(),
        }
    return report


def summary(report: dict) -> dict:
    """What a manifest keeps of a report: per condition, the headline rates and the per-voice accuracy."""
    return {c: {k: r[k] for k in ("accuracy", "keyword_accuracy", "unknown_taken_for_keyword",
                                  "near_miss_taken_for_keyword", "per_voice")}
            for c, r in report["conditions"].items()}


def plot_confusions(report: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CONDITIONS), figsize=(7 * len(CONDITIONS), 6.5))
    for ax, cond in zip(axes, CONDITIONS, strict=True):
        cm = np.array(report["conditions"][cond]["confusion"], dtype=float)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=70, fontsize=8)
        ax.set_yticks(range(len(CLASSES)), CLASSES, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        acc = report["conditions"][cond]["accuracy"]
        ax.set_title(f"{cond}: {acc:.1%}")
        for i in range(len(CLASSES)):
            for j in range(len(CLASSES)):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
