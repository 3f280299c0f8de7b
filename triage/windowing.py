"""Which class a window of running speech is, given keyword times: the one rule that training
(training/windows.py) and adaptation to a centre's calls (triage/adapt.py) both label windows by."""

from __future__ import annotations

from triage.keywords import UNKNOWN

KEYWORD_SHARE = 0.92  # of the keyword inside the window to call the window that keyword
SLIVER = 0.15  # at most this share (and 150 ms) of a keyword inside a window that is `_unknown_`


def window_label(start: float, length: float, words: list[tuple[str, float, float]]) -> str | None:
    """The label of the window [start, start + length) given keyword times; None when masked."""
    stop = start + length
    found = None
    for kw, s, e in words:
        overlap = max(0.0, min(stop, e) - max(start, s))
        dur = max(e - s, 1e-3)
        if overlap / dur >= KEYWORD_SHARE or overlap >= 0.9 * length:
            if found is not None:
                return None  # two whole keywords in one window: no single right answer
            found = kw
        elif overlap / dur > SLIVER or overlap > 0.15:
            return None
    return found or UNKNOWN
