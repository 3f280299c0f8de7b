"""Faults during 20 live calls, with exact accounting: the server SIGKILLed and restarted while its
callers reconnect, and Redis SIGKILLed and restarted from its append-only file. Every route a caller
was told about exists exactly once in Redis, and no call's route is missing."""

import asyncio
import subprocess
import threading
import time

import numpy as np
import pytest
import redis
from livekit import ServerProcess, live
from onnx_models import silence, tone

from triage import client
from triage.embedded_redis import EmbeddedRedis

CALLS = 20


def call_audio(i: int) -> tuple[bytes, int]:
    """A 6 s call whose keyword (the loud tone) comes between 0.5 and 4 s: some calls are routed
    before the fault, some during it, some after."""
    lead = 0.5 + 3.5 * i / (CALLS - 1)
    audio = np.concatenate([silence(lead, 8000), tone(0.9, rate=8000), silence(5.1 - lead, 8000)])
    return client.prepare(audio, 8000, "mulaw", 8000)


async def calls(url: str, told: dict[str, list[int]]) -> list:
    async def one(i: int):
        data, width = call_audio(i)
        call_id = f"fault-{i:02d}"

        def on_event(ev):
            told.setdefault("_seen", []).append(ev.get("type"))
            if ev.get("type") == "warning":
                told.setdefault("_warnings", []).append(ev.get("message", ""))
            if ev.get("type") == "route":
                told.setdefault(call_id, []).extend(ev["services"])
        await asyncio.sleep(i * 0.05)
        return await client.stream_call(url, data, width, 8000, "mulaw", call_id=call_id, on_event=on_event,
                                        max_retries=20)
    return await asyncio.gather(*(one(i) for i in range(CALLS)), return_exceptions=True)


def exactly_once(db: redis.Redis, told: dict[str, list[int]], summaries: list) -> None:
    told = {k: v for k, v in told.items() if not k.startswith("_")}
    failed = [s for s in summaries if isinstance(s, BaseException)]
    assert not failed, failed[:3]
    assert [s["services"] for s in summaries] == [[18]] * CALLS
    queued = [e[1]["call_id"] for e in db.xrange("triage:queue:18")]
    assert sorted(queued) == [f"fault-{i:02d}" for i in range(CALLS)]  # none missing, none twice
    assert set(told) <= set(queued) and db.xlen("triage:queue:15") == db.xlen("triage:queue:17") == 0


def test_server_sigkilled_during_20_calls_loses_and_duplicates_no_route(loud_model_path, redis_server, rdb):
    srv = ServerProcess(loud_model_path, redis_server.url, None, "--workers", "1").start()
    told: dict[str, list[int]] = {}

    def kill_and_restart():
        time.sleep(2.5)
        srv.kill()
        time.sleep(1.0)
        srv.start()

    fault = threading.Thread(target=kill_and_restart)
    fault.start()
    try:
        summaries = asyncio.run(calls(srv.url + "/call", told))
        fault.join()
    finally:
        srv.stop()
    assert "reconnecting" in told["_seen"]  # the fault hit live calls
    exactly_once(rdb, told, summaries)


def test_redis_sigkilled_during_20_calls_restarts_from_aof_without_loss(loud_model_path, tmp_path):
    # appendfsync always: a route acknowledged by Redis is on disk (with everysec, a kill can lose
    # the last second of writes; RELIABILITY.md says which to configure).
    r = EmbeddedRedis(tmp_path / "r", appendfsync="always").start()
    told: dict[str, list[int]] = {}

    async def scenario(server, base):
        async def fault():
            await asyncio.sleep(2.0)
            r.kill()
            await asyncio.sleep(2.0)
            await asyncio.to_thread(EmbeddedRedis(tmp_path / "r", port=r.port, appendfsync="always").start)
        f = asyncio.create_task(fault())
        summaries = await calls(base + "/call", told)
        await f
        for _ in range(100):  # the outbox drains once Redis is back
            if not server.outbox.items:
                break
            await asyncio.sleep(0.1)
        return summaries

    try:
        summaries = live(loud_model_path, r.url, scenario)
        assert "warning" in told["_seen"] and "store_recovered" in told["_seen"]  # the fault hit live calls
        exactly_once(redis.Redis.from_url(r.url, decode_responses=True), told, summaries)
    finally:
        redis.Redis.from_url(r.url).shutdown(nosave=False)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: Redis's AOF directory, to be filled up."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(path) -> None:
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_aof_disk_full_warns_keeps_scoring_and_writes_routes_once_space_returns(loud_model_path, small_disk):
    r = EmbeddedRedis(small_disk / "redis").start()
    told: dict[str, list[int]] = {}

    async def scenario(server, base):
        await asyncio.to_thread(fill, small_disk / "filler")
        summaries = asyncio.create_task(calls(base + "/call", told))
        for _ in range(100):  # the first route write meets the full disk
            if not server.redis_up:
                break
            await asyncio.sleep(0.1)
        full = not server.redis_up
        (small_disk / "filler").unlink()  # space returns
        done = await summaries
        for _ in range(100):
            if not server.outbox.items and server.redis_up:
                break
            await asyncio.sleep(0.1)
        return full, done

    try:
        full, summaries = live(loud_model_path, r.url, scenario)
        assert full and "store_recovered" in told["_seen"]
        assert any("No space left on device" in w for w in told["_warnings"]), told["_warnings"][:1]
        exactly_once(redis.Redis.from_url(r.url, decode_responses=True), told, summaries)
    finally:
        redis.Redis.from_url(r.url).shutdown(nosave=True)


def test_console_sigkilled_after_a_claim_its_call_is_redelivered_to_another(redis_server, rdb):
    import os
    import signal
    import sys

    from triage.store import RouteStore

    async def route():
        s = RouteStore(redis_server.url)
        await s.ensure_groups()
        await s.route("console-1", 15, ["malaise"], [], 1.0)
        await s.close()
    asyncio.run(route())
    console = subprocess.Popen([sys.executable, "-m", "triage.cli", "dispatch", "--service", "15", "--name", "dave",
                                "--redis-url", redis_server.url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        shown = b""
        deadline = time.monotonic() + 20
        while b"call console-1" not in shown and time.monotonic() < deadline:
            shown += console.stdout.read1(4096)
        assert b"call console-1" in shown
        assert rdb.hget("triage:call:console-1", "claimed_by:15") == "dave"
        console.send_signal(signal.SIGKILL)  # dies holding the claim, without acknowledging
        console.wait(5)
    finally:
        if console.poll() is None:
            console.kill()

    async def another():
        s = RouteStore(redis_server.url, claim_idle_ms=200)
        await asyncio.sleep(0.3)
        entry = await s.next_for(15, "erin")
        await s.ack(entry.call_id, 15, "erin")
        await s.close()
        return entry.call_id
    assert asyncio.run(another()) == "console-1"
    assert rdb.hget("triage:call:console-1", "acked_by:15") == "erin"
