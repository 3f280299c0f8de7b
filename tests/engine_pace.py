"""The live engine's pace, checked against a spotter fed every frame at once (tests/test_spotter.py and
tests/test_streaming.py, for windowed and step models)."""

from __future__ import annotations

import numpy as np

from triage.audio import StreamResampler, decode, encode, resample
from triage.engine import ScoringEngine
from triage.model import KeywordModel
from triage.spotter import KeywordSpotter, score_batch


def engine_keeps_pace(model: KeywordModel, call: np.ndarray, rate: int) -> tuple[int, int]:
    """A call (16 kHz) sent as 20 ms μ-law frames at `rate`, one tick after each. A tick leaves the call's
    bytes pending until they complete a window (a step model's hop), and never longer: after every tick the
    engine's spotter has had exactly the windows of a spotter fed each frame as it came. Returns (windows,
    ticks that took audio)."""
    line = encode(resample(call, 16000, rate), "mulaw")
    frame = rate // 50
    engine = ScoringEngine(model)
    engine.add("c", rate, "mulaw")
    alone, resampler = KeywordSpotter(model), StreamResampler(rate)
    took = 0
    for i in range(0, len(line), frame):
        engine.receive("c", line[i: i + frame])
        took += engine.tick().frames > 0
        alone.push(resampler.feed(decode(line[i: i + frame], "mulaw")))
        score_batch(model, [alone])
        assert engine.calls["c"].spotter.windows_scored == alone.windows_scored, f"tick at {i / rate:.2f} s"
    return alone.windows_scored, took
