"""`triage serve --workers 2`: two processes on one port, one Redis, every dashboard sees every call,
and a call whose worker is killed resumes on another with its route written once."""

import asyncio
import json
import os
import signal
import time

import numpy as np
from livekit import ServerProcess, http_get, metric_samples, mulaw_frames
from onnx_models import silence, tone
from websockets.asyncio.client import connect

from triage.client import stream_call

CALL_8K = np.concatenate([silence(1.5, 8000), tone(0.9, rate=8000), silence(1.5, 8000)])


def workers_seen(port: int, want: int = 2, seconds: float = 30.0) -> dict[int, dict]:
    """pid → /healthz of each worker answering (SO_REUSEPORT spreads new connections over them; on a
    loaded machine one worker may answer many in a row, and the server's first answer may come while
    another worker is still loading its model: probe until `want` have answered, for a bounded time)."""
    seen = {}
    deadline = time.monotonic() + seconds
    while len(seen) < want and time.monotonic() < deadline:
        h = json.loads(http_get(f"http://127.0.0.1:{port}/healthz")[1])
        seen[h["pid"]] = h
        if len(seen) < want:
            time.sleep(0.01)
    return seen


def test_two_workers_share_the_port_and_the_feed(loud_model_path, redis_server, rdb):
    srv = ServerProcess(loud_model_path, redis_server.url, None, "--workers", "2").start()
    data = b"".join(mulaw_frames(CALL_8K))
    ids = [f"w{i}" for i in range(8)]

    async def scenario():
        async with connect(srv.url + "/feed") as feed:
            assert json.loads(await feed.recv())["type"] == "snapshot"
            summaries = await asyncio.gather(*(stream_call(srv.url + "/call", data, 1, 8000, "mulaw", speed=4.0,
                                                           call_id=i) for i in ids))
            seen: dict[str, set] = {}
            async with asyncio.timeout(10):
                while not all({"call_started", "route", "call_ended"} <= seen.get(i, set()) for i in ids):
                    ev = json.loads(await feed.recv())
                    if "call_id" in ev:
                        seen.setdefault(ev["call_id"], set()).add(ev["type"])
            return summaries

    try:
        assert len(workers_seen(srv.port)) == 2
        summaries = asyncio.run(scenario())
        # /metrics sums every worker, whichever one answers (SO_REUSEPORT picks)
        scrapes = [metric_samples(http_get(f"http://127.0.0.1:{srv.port}/metrics")[1]) for _ in range(10)]
    finally:
        srv.stop()
    assert [s["services"] for s in summaries] == [[18]] * len(ids)
    assert {m["triage_calls_total"] for m in scrapes} == {len(ids)}
    assert {m["triage_detection_lag_seconds_count"] for m in scrapes} == {len(ids)}
    assert {m['triage_detections_total{keyword="incendie"}'] for m in scrapes} == {len(ids)}
    assert sorted(e[1]["call_id"] for e in rdb.xrange("triage:queue:18")) == sorted(ids)


def test_a_killed_worker_is_restarted_and_its_call_completes_elsewhere(loud_model_path, redis_server, rdb):
    srv = ServerProcess(loud_model_path, redis_server.url, None, "--workers", "2").start()
    data = b"".join(mulaw_frames(CALL_8K))
    events = []

    async def scenario():
        call = asyncio.create_task(stream_call(srv.url + "/call", data * 2, 1, 8000, "mulaw", speed=1.0,
                                               call_id="kill-me", on_event=events.append))
        while not any(e["type"] == "route" for e in events):
            await asyncio.sleep(0.05)
        holder = next(pid for pid, h in workers_seen(srv.port).items() if h["live_calls"] == 1)
        os.kill(holder, signal.SIGKILL)
        return holder, await call

    try:
        before = set(workers_seen(srv.port))
        holder, summary = asyncio.run(scenario())
        after = set(workers_seen(srv.port))
    finally:
        srv.stop()
    assert holder in before and holder not in after and len(after) == 2  # restarted
    assert any(e["type"] == "reconnecting" for e in events)
    assert summary["services"] == [18] and summary["reason"] == "completed"
    assert [e[1]["call_id"] for e in rdb.xrange("triage:queue:18")] == ["kill-me"]  # written once
