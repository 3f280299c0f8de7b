"""Dispatcher feedback → measurement (pure), and the whole loop live: a scripted call with feedback,
its feedback and audit trail, export → `triage replay --labels` round trip, the report and the audit export."""

import datetime as dt
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from livekit import collect, live, mulaw_frames, send_audio, start_call
from onnx_models import silence, tone
from websockets.asyncio.client import connect

from triage import feedback

DETECTION = {"type": "detection", "call_id": "a", "keyword": "incendie", "service": 18, "time": 2.0,
             "confidence": 0.9}


def _audit(kind, call_id, model="m1", **event):
    return {"kind": kind, "call_id": call_id, "model": model, "event": json.dumps({"type": kind, **event})}


def _fb(action, call_id, service, model="m1", **extra):
    return {"action": action, "call_id": call_id, "service": str(service), "model": model, "dispatcher": "alice",
            **{k: str(v) for k, v in extra.items()}}


def test_reviewed_calls_measure_precision_recall_false_alarms_and_first_correct_route():
    audit = [
        _audit("detection", "a", keyword="incendie", time=2.0, confidence=0.9),
        _audit("route", "a", services=[18], changed_at=2.0),
        _audit("detection", "b", keyword="gaz", time=5.0, confidence=0.8),
        _audit("route", "b", services=[18], changed_at=5.0),
        _audit("detection", "b", keyword="malaise", time=9.0, confidence=0.7),
        _audit("route", "b", services=[18, 15], changed_at=9.0),
        _audit("detection", "never-reviewed", keyword="vol", time=1.0, confidence=0.9),
        _audit("detection", "c", model="m2", keyword="vol", time=3.0, confidence=0.95),
        _audit("route", "c", model="m2", services=[17], changed_at=3.0),
    ]
    fb = [_fb("confirm", "a", 18),
          _fb("wrong_detection", "b", 18, keyword="gaz", detection_time=5.0),
          _fb("reroute", "b", 18, to_service=15),
          _fb("missed", "b", 15, keyword="hémorragie", said_at=7.5),
          _fb("confirm", "c", 17, model="m2"), _fb("missed", "c", 17, model="m2", keyword="vol", said_at=20.0)]
    calls = feedback.reviewed_calls(fb, audit, {"a": 1800.0, "b": 1800.0, "c": 3600.0})
    assert [c.call_id for c in calls] == ["a", "b", "c"]
    a, b, c = calls
    assert b.true_services == {15} and b.routed == {15, 18} and b.first_correct_route() == 9.0
    assert a.first_correct_route() == 2.0 and c.first_correct_route() == 3.0
    rep = feedback.report(calls)
    o = rep["overall"]
    assert o["calls"] == 3 and o["hours"] == 2.0 and o["false_alarms"] == 1 and o["false_alarms_per_hour"] == 0.5
    assert o["route_exact_match"] == round(2 / 3, 4)
    assert o["per_keyword"]["gaz"] == {"detections": 1, "correct": 0, "wrong": 1, "missed": 0, "precision": 0.0,
                                       "recall": None}
    assert o["per_keyword"]["vol"]["recall"] == 0.5 and o["per_keyword"]["hémorragie"]["recall"] == 0.0
    assert o["per_service"]["18"] == {"routed": 2, "true": 1, "both": 1, "precision": 0.5, "recall": 1.0}
    assert o["per_service"]["15"] == {"routed": 1, "true": 1, "both": 1, "precision": 1.0, "recall": 1.0}
    assert o["time_to_first_correct_route_s"] == {"calls": 3, "median": 3.0, "p95": 8.4}
    assert list(rep["models"]) == ["m1", "m2"] and rep["models"]["m2"]["calls"] == 1
    line = feedback.label(b, 0.98, "b.wav")
    assert line["services"] == [15] and line["keywords"] == [
        {"keyword": "hémorragie", "start": 6.5, "end": 8.5}, {"keyword": "malaise", "start": 8.02, "end": 9.0}]


CALL = np.concatenate([silence(2.0, 8000), tone(0.9, rate=8000), silence(2.0, 8000)])


def _run(*args):
    return subprocess.run([sys.executable, "-m", "triage.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_feedback_loop_end_to_end(loud_model_path, redis_server, rdb, tmp_path):
    """Three recorded calls, each with feedback; the trail in Redis; export → replay round trip; report; audit."""
    rec = tmp_path / "rec"

    async def one_call(base, call_id):
        ws, _ = await start_call(base + "/call", call_id)
        await send_audio(ws, mulaw_frames(CALL), pace=0.001)
        await ws.send(json.dumps({"type": "stop"}))
        events = await collect(ws, "summary")
        await ws.close()
        return events[-1]

    async def scenario(server, base):
        summaries = {c: await one_call(base, c) for c in ("ok-1", "wrong-1", "missed-1")}
        async with connect(base + "/feed") as feed:
            json.loads(await feed.recv())
            t = summaries["wrong-1"]["detections"][0]["time"]
            for action in ({"type": "claim", "call_id": "ok-1", "service": 18},
                           {"type": "confirm", "call_id": "ok-1", "service": 18},
                           {"type": "wrong", "call_id": "wrong-1", "service": 18, "keyword": "incendie", "time": t},
                           {"type": "claim", "call_id": "wrong-1", "service": 18},
                           {"type": "reroute", "call_id": "wrong-1", "service": 18, "to_service": 15},
                           {"type": "missed", "call_id": "missed-1", "service": 18, "keyword": "gaz", "time": 4.0},
                           {"type": "confirm", "call_id": "missed-1", "service": 18}):
                await feed.send(json.dumps({**action, "dispatcher": "alice"}))
                result = (await collect(feed, "action_result"))[-1]
                assert result["ok"], result
        return summaries

    summaries = live(loud_model_path, redis_server.url, scenario, record_dir=rec)
    fb = [f for _, f in rdb.xrange("triage:feedback")]
    assert [(f["call_id"], f["action"]) for f in fb] == [
        ("ok-1", "confirm"), ("wrong-1", "wrong_detection"), ("wrong-1", "reroute"), ("missed-1", "missed"),
        ("missed-1", "confirm")]
    assert [(f["model"].split("@")[0], f["dispatcher"], "incendie" in f["evidence"]) for f in fb] == [
        ("loudness-test", "alice", True)] * 5
    kinds = [(a["call_id"], a["kind"], a.get("action")) for _, a in rdb.xrange("triage:audit")]
    assert kinds == [("ok-1", "detection", None), ("ok-1", "route", None),
                     ("wrong-1", "detection", None), ("wrong-1", "route", None),
                     ("missed-1", "detection", None), ("missed-1", "route", None),
                     ("ok-1", "action", "claim"), ("ok-1", "action", "confirm"),
                     ("wrong-1", "action", "wrong_detection"), ("wrong-1", "action", "claim"),
                     ("wrong-1", "action", "reroute"), ("missed-1", "action", "missed"),
                     ("missed-1", "action", "confirm")]

    out = tmp_path / "dataset"
    r = _run("feedback", "export", out, "--recordings", rec, "--redis-url", redis_server.url,
             "--model", loud_model_path)
    assert r.returncode == 0, r.stderr
    labels = {x["file"]: x for x in map(json.loads, (out / "labels.jsonl").read_text().splitlines())}
    assert {f: x["services"] for f, x in labels.items()} == {"ok-1.wav": [18], "wrong-1.wav": [15],
                                                              "missed-1.wav": [18]}
    assert [k["keyword"] for k in labels["missed-1.wav"]["keywords"]] == ["incendie", "gaz"]
    files = [out / f for f in ("ok-1.wav", "wrong-1.wav", "missed-1.wav")]
    r = _run("replay", *files, "--json", "--labels", out / "labels.jsonl", "--model", loud_model_path)
    assert r.returncode == 0, r.stderr
    replayed = [json.loads(x) for x in r.stdout.splitlines()]
    for got, call_id in zip(replayed, ("ok-1", "wrong-1", "missed-1"), strict=True):
        live_dets = summaries[call_id]["detections"]
        assert [(d["keyword"], round(d["time"], 3)) for d in got["detections"]] == \
            [(d["keyword"], round(d["time"], 3)) for d in live_dets]  # the recording is what was scored
    metrics = json.loads(r.stderr.split("metrics: ", 1)[1].splitlines()[0])
    assert metrics["route_exact_match"] == pytest.approx(2 / 3) and metrics["false_alarms"] == 1

    r = _run("report", "--json", "--html", tmp_path / "report" / "index.html", "--redis-url", redis_server.url)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["overall"]["calls"] == 3 and rep["overall"]["route_exact_match"] == round(2 / 3, 4)
    assert rep["overall"]["per_keyword"]["incendie"]["precision"] == round(2 / 3, 4)
    assert rep["overall"]["per_keyword"]["gaz"]["missed"] == 1
    assert (tmp_path / "report" / "index_keywords.png").stat().st_size > 5000
    assert "reviewed calls" in (tmp_path / "report" / "index.html").read_text()

    today = dt.datetime.now(dt.UTC).date().isoformat()
    r = _run("audit", "export", tmp_path / "audit", "--day", today, "--redis-url", redis_server.url)
    assert r.returncode == 0, r.stderr
    exported = [json.loads(x) for x in (tmp_path / "audit" / f"audit-{today}.jsonl").read_text().splitlines()]
    assert [e["id"] for e in exported] == [e[0] for e in rdb.xrange("triage:audit")]


def test_offline_commands_without_redis_say_how_to_give_it(tmp_path):
    r = subprocess.run([sys.executable, "-m", "triage.cli", "report"], capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "REDIS_URL"})
    assert r.returncode == 1 and "report needs the service's Redis: --redis-url URL or REDIS_URL" in r.stderr
    r = _run("report", "--redis-url", "redis://127.0.0.1:1/0")
    assert r.returncode == 1 and "Redis at redis://127.0.0.1:1/0 not reachable" in r.stderr
