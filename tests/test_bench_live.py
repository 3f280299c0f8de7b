"""bench/live.py's arithmetic: what it calls the keyword latency and the service's own delay."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def live():
    spec = importlib.util.spec_from_file_location("bench_live", ROOT / "bench" / "live.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_keyword_latency_the_service_delay_and_the_model_latency_are_timed_from_different_audio(live):
    """A keyword ends at 1.4 s of the call, the window that fires ends at 1.6 s and its detection arrives
    1.7 s after `ready`: the keyword waited 0.3 s, of which the service's own share is 0.1 s. Replayed
    offline, the model fires on it at 1.5 s (0.1 s, its own share) and on the other keyword too."""
    script = live.Script("a.wav", b"", [("gaz", 1.0, 1.4), ("vol", 5.0, 5.3)], [17, 18])
    call = live.Call(script, events=[(10.0, {"type": "ready"}),
                                     (11.7, {"type": "detection", "keyword": "gaz", "time": 1.6}),
                                     (13.0, {"type": "detection", "keyword": "incendie", "time": 2.8})],
                     summary={"services": [18]})
    r = live.measure([call], {"a.wav": live.Offline([18], [("gaz", 1.5), ("vol", 5.3), ("gaz", 9.0)])})
    assert r["keyword_detections_timed"] == 1 and r["latency_p50_s"] == pytest.approx(0.3)
    assert r["model_latency_p50_s"] == pytest.approx(0.05) and r["model_latency_p95_s"] == pytest.approx(0.095)
    assert r["service_delay_p50_s"] == pytest.approx(0.15) and r["service_delay_p95_s"] == pytest.approx(0.195)
    assert (r["routed_as_replay"], r["routed_as_labels"]) == (1, 0)
