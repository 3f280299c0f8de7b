import json

import numpy as np
import pytest
from onnx_models import silence, tone

from triage.model import KeywordModel
from triage.replay import CallResult, load_labels, replay_samples, score
from triage.router import CallRouter
from triage.spotter import Detection


def result(name, dets, duration=30.0):
    r = CallRouter()
    r.update(dets)
    return CallResult(name, duration, dets, r.decision)


def test_score_counts_recall_false_alarms_latency_and_routes(tmp_path):
    labels_path = tmp_path / "l.jsonl"
    labels_path.write_text("\n".join(json.dumps(x) for x in [
        {"file": "a.wav", "services": [18], "keywords": [{"keyword": "incendie", "start": 5.0, "end": 5.6}]},
        {"file": "b.wav", "services": [15, 17], "keywords": [{"keyword": "vol", "start": 3.0, "end": 3.3},
                                                              {"keyword": "malaise", "start": 9.0, "end": 9.5}]},
        {"file": "c.wav", "services": []},
    ]))
    labels = load_labels(labels_path)
    results = [
        result("dir/a.wav", [Detection("incendie", 18, 5.8, 0.9), Detection("incendie", 18, 6.4, 0.8)]),
        result("b.wav", [Detection("vol", 17, 3.5, 0.9)]),
        result("c.wav", [Detection("gaz", 18, 12.0, 0.7)]),
    ]
    s = score(results, labels).summary()
    assert s["calls"] == 3 and s["route_exact_match"] == pytest.approx(1 / 3)
    assert s["keywords"] == 3 and s["keyword_recall"] == pytest.approx(2 / 3)
    assert s["false_alarms"] == 1  # the repeat of "incendie" near its word is not one; "gaz" is
    assert s["keyword_free_hours"] == pytest.approx((90 - 0.6 - 0.3 - 0.5) / 3600, abs=1e-4)
    assert s["latency_p50_s"] == pytest.approx(0.2)


def test_bad_label_line_names_the_line(tmp_path):
    p = tmp_path / "l.jsonl"
    p.write_text('{"file": "a.wav", "services": [18]}\n{"file": "b.wav"}\n')
    with pytest.raises(ValueError, match="l.jsonl:2: bad label line"):
        load_labels(p)


def test_replay_is_independent_of_chunk_size(loud_model_path):
    model = KeywordModel(loud_model_path)
    x = np.concatenate([silence(1.5), tone(0.8), silence(2), tone(1.0), silence(1)])
    a = replay_samples(model, x, chunk_s=1.0)
    b = replay_samples(model, x, chunk_s=0.02)
    assert a.detections == b.detections and a.services == b.services == [18]
