"""Hot reload of a promoted model (SIGHUP): new calls get it, live calls go on, nothing is lost or paused."""

import asyncio
import json
import shutil
import signal
import time

import numpy as np
from livekit import ServerProcess, collect, http_get, live, mulaw_frames, send_audio, start_call
from onnx_models import loudness_model, silence, tone

CALL = np.concatenate([silence(1.0, 8000), tone(0.9, rate=8000), silence(1.5, 8000), tone(0.9, rate=8000),
                       silence(1.0, 8000)])


def _promote(src_dir, model_path):
    """What `triage adapt --promote` does: the new files replace the served ones."""
    for suffix in (".json", ".onnx"):
        shutil.copy(src_dir / f"loud{suffix}", model_path.with_suffix(suffix))


def test_reload_during_20_live_calls_loses_no_chunk_and_no_route(loud_model_path, redis_server, rdb, tmp_path):
    promoted = tmp_path / "promoted"
    promoted.mkdir()
    loudness_model(promoted, keyword="malaise")  # the "adapted" model routes loud audio to 15
    frames = mulaw_frames(CALL)

    async def one_call(base, call_id, pace):
        ws, _ = await start_call(base + "/call", call_id)
        await send_audio(ws, frames, pace=pace)
        await ws.send(json.dumps({"type": "stop"}))
        events = await collect(ws, "summary", timeout=60)
        await ws.close()
        return events[-1]

    async def scenario(server, base):
        before = server.model.version
        calls = [asyncio.create_task(one_call(base, f"live-{i}", pace=0.01)) for i in range(20)]
        await asyncio.sleep(1.0)  # every call is mid-stream
        _promote(promoted, loud_model_path)
        t = time.monotonic()
        assert await server.reload_model()
        reload_s = time.monotonic() - t
        after_reload = await one_call(base, "after-1", pace=0.0)
        summaries = await asyncio.gather(*calls)
        return before, server.model.version, reload_s, summaries, after_reload

    before, after, reload_s, summaries, new_call = live(loud_model_path, redis_server.url, scenario)
    assert before != after and reload_s < 2
    duration = len(CALL) / 8000
    for s in summaries:  # every chunk scored, every call routed as its model said, once
        assert s["duration"] == duration and s["services"] == [18] and s["reason"] == "completed"
        assert [d["keyword"] for d in s["detections"]] == ["incendie", "incendie"]
    assert new_call["services"] == [15] and new_call["detections"][0]["keyword"] == "malaise"
    assert rdb.xlen("triage:queue:18") == 20 and rdb.xlen("triage:queue:15") == 1
    models = {json.loads(a["event"])["call_id"]: a["model"] for _, a in rdb.xrange("triage:audit")
              if a["kind"] == "route"}
    assert {m for c, m in models.items() if c.startswith("live-")} == {before} and models["after-1"] == after
    assert rdb.hget("triage:call:after-1", "model") == after
    (reload_entry,) = [a for _, a in rdb.xrange("triage:audit") if a["kind"] == "model_reloaded"]
    assert json.loads(reload_entry["event"])["from"] == before


def test_a_model_that_does_not_load_is_refused_and_the_current_one_stays(loud_model_path, redis_server, rdb):
    async def scenario(server, base):
        before = server.model.version
        loud_model_path.write_bytes(b"not onnx")
        ok = await server.reload_model()
        services = (await _fire(base))["services"]
        return ok, before, server.model.version, services

    ok, before, after, services = live(loud_model_path, redis_server.url, scenario)
    assert not ok and before == after and services == [18]


async def _fire(base):
    ws, _ = await start_call(base + "/call", "still-1")
    await send_audio(ws, mulaw_frames(CALL))
    await ws.send(json.dumps({"type": "stop"}))
    events = await collect(ws, "summary")
    await ws.close()
    return events[-1]


def test_sighup_reloads_the_model_of_every_worker(loud_model_path, redis_server, tmp_path):
    promoted = tmp_path / "promoted"
    promoted.mkdir()
    loudness_model(promoted, keyword="malaise")
    server = ServerProcess(loud_model_path, redis_server.url, None, "--workers", "2").start(timeout=60)
    try:
        url = f"http://127.0.0.1:{server.port}/healthz"
        pids, deadline = set(), time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:  # both workers up
            pids.add(json.loads(http_get(url)[1])["pid"])
        before = json.loads(http_get(url)[1])["model_version"]
        _promote(promoted, loud_model_path)
        server.proc.send_signal(signal.SIGHUP)
        deadline, seen = time.monotonic() + 20, {}
        while time.monotonic() < deadline and (len(seen) < 2 or before in seen.values()):
            health = json.loads(http_get(url)[1])
            seen[health["pid"]] = health["model_version"]
            time.sleep(0.05)
        assert len(seen) == 2 and set(seen.values()) == {json.loads(http_get(url)[1])["model_version"]} != {before}
    finally:
        log = server.stop()
    assert log.count("model reloaded") == 2, log
