"""Hard-negative mining: keyword-free windows of the training speech that the model takes for a keyword.

A round scores every `_unknown_` window of the training utterances (all of them, not the few the
dataset keeps per utterance), keeps those whose highest keyword posterior passes `floor`, and
fine-tunes on the training set plus those windows. Only training voices are mined; the dev and test
voices are never looked at here.
"""

from __future__ import annotations

import numpy as np

from triage.keywords import CLASSES, KEYWORDS, UNKNOWN


def hard_negatives(predict, x: np.ndarray, floor: float = 0.2, batch: int = 2048,
                   rows: np.ndarray | None = None) -> np.ndarray:
    """Indices into x of the windows among `rows` (default: all) whose highest keyword probability is at least
    `floor` (none of none: a tiny run, or a model that mines nothing, rescores an empty set after its round).
    `rows` spares a copy of the keyword-free windows out of a round's gigabytes of windows."""
    rows = np.arange(len(x)) if rows is None else np.asarray(rows, dtype=np.int64)
    top = np.concatenate([np.zeros(0, np.float32)] + [
        predict(x[rows[i: i + batch]].astype(np.float32))[:, : len(KEYWORDS)].max(axis=1)
        for i in range(0, len(rows), batch)])
    return rows[top >= floor]


def with_negatives(train: dict, x_neg: np.ndarray, repeat: int = 2) -> dict:
    """The training set plus `repeat` copies of the mined windows labelled `_unknown_`."""
    x = np.concatenate([train["x"], *([x_neg.astype(train["x"].dtype)] * repeat)])
    y = np.concatenate([train["y"], np.full(len(x_neg) * repeat, CLASSES.index(UNKNOWN), dtype=train["y"].dtype)])
    return {"x": x, "y": y}
