"""The live service over real loopback sockets, with a real Redis-compatible server and a real ONNX model."""

import asyncio
import json
import time

import numpy as np
import pytest
import redis
from livekit import (
    ServerProcess,
    collect,
    dispatcher_actions,
    http_get,
    live,
    metric_samples,
    mulaw_frames,
    send_audio,
    start_call,
)
from onnx_models import silence, tone
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from triage.credentials import CredentialFile, Credentials
from triage.embedded_redis import EmbeddedRedis
from triage.model import KeywordModel
from triage.server import ServerConfig, TriageServer
from triage.store import RouteStore

CALL_8K = np.concatenate([silence(1.5, 8000), tone(0.9, rate=8000), silence(1.5, 8000)])


def test_incendie_call_is_routed_to_18_on_socket_feed_and_redis(loud_model_path, redis_server, rdb):
    async def scenario(server, base):
        async with connect(base + "/feed") as feed:
            snapshot = json.loads(await feed.recv())
            assert snapshot["type"] == "snapshot" and snapshot["redis"] is True
            ws, ready = await start_call(base + "/call", "fire-1")
            assert ready == {"type": "ready", "call_id": "fire-1", "resumed": False, "samples_received": 0,
                             "sample_rate": 8000, "services": []}
            await send_audio(ws, mulaw_frames(CALL_8K))
            await ws.send(json.dumps({"type": "stop"}))
            events = await collect(ws, "summary")
            feed_events = await collect(feed, "call_ended")
            await ws.close()
            return events, feed_events

    events, feed_events = live(loud_model_path, redis_server.url, scenario)
    kinds = [e["type"] for e in events]
    assert kinds == ["detection", "route", "summary"]
    det, route, summary = events
    assert det["keyword"] == "incendie" and det["service"] == 18 and 1.5 < det["time"] < 2.8
    assert route["services"] == [18] and route["evidence"]["18"][0]["keyword"] == "incendie"
    assert summary["services"] == [18] and summary["duration"] == pytest.approx(3.9, abs=0.01)
    assert {"call_started", "detection", "route", "call_ended"} <= {e["type"] for e in feed_events}
    (entry,) = rdb.xrange("triage:queue:18")
    assert entry[1]["call_id"] == "fire-1" and json.loads(entry[1]["keywords"]) == ["incendie"]
    assert rdb.xlen("triage:queue:15") == rdb.xlen("triage:queue:17") == 0
    assert rdb.hget("triage:call:fire-1", "state") == "ended"
    assert any(json.loads(e[1]["event"])["type"] == "route" for e in rdb.xrange("triage:events"))


def test_dropped_connection_resumes_the_same_call_without_duplicate_route(loud_model_path, redis_server, rdb):
    frames = mulaw_frames(CALL_8K)
    half = len(frames) * 3 // 4  # past the keyword: routed before the drop

    async def scenario(server, base):
        ws, _ = await start_call(base + "/call", "drop-1")
        await send_audio(ws, frames[:half])
        await collect(ws, "route")
        ws.transport.abort()  # the line drops, no close handshake
        await asyncio.sleep(0.2)
        ws2, ready = await start_call(base + "/call", "drop-1")
        await send_audio(ws2, frames[half:] + mulaw_frames(tone(0.9, rate=8000)) + mulaw_frames(silence(1, 8000)))
        await ws2.send(json.dumps({"type": "stop"}))
        events = await collect(ws2, "summary")
        await ws2.close()
        return ready, events

    ready, events = live(loud_model_path, redis_server.url, scenario)
    assert ready["resumed"] is True and ready["samples_received"] == (len(frames) * 3 // 4) * 160
    assert ready["services"] == [18]
    assert "route" not in [e["type"] for e in events]  # same service again: no new route
    assert events[-1]["services"] == [18] and len(events[-1]["detections"]) == 2
    assert rdb.xlen("triage:queue:18") == 1


def test_resume_takes_over_a_half_open_connection(loud_model_path, redis_server, rdb):
    """The old socket still looks open to the server but no longer answers (a half-open line)."""
    frames = mulaw_frames(CALL_8K)

    async def scenario(server, base):
        ws, _ = await start_call(base + "/call", "half-open-1", ping_interval=None)
        await send_audio(ws, frames[:50])
        ws.transport.pause_reading()  # the old client hears nothing more: pings go unanswered
        t = asyncio.get_running_loop().time()
        ws2, ready = await start_call(base + "/call", "half-open-1")
        waited = asyncio.get_running_loop().time() - t
        await send_audio(ws2, frames[50:])
        await ws2.send(json.dumps({"type": "stop"}))
        events = await collect(ws2, "summary")
        ws.transport.resume_reading()
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        return ready, waited, events, ws.close_code, server.metrics.value("triage_takeovers_total")

    ready, waited, events, old_code, takeovers = live(loud_model_path, redis_server.url, scenario,
                                                     takeover_ping_s=0.5)
    assert ready["type"] == "ready" and ready["resumed"] is True and ready["samples_received"] == 50 * 160
    assert 0.4 < waited < 3
    assert old_code == 4001
    assert events[-1]["type"] == "summary" and events[-1]["services"] == [18]
    assert takeovers == 1
    assert rdb.xlen("triage:queue:18") == 1


def test_second_live_connection_with_the_same_id_is_refused(loud_model_path, redis_server, rdb):
    async def scenario(server, base):
        ws, _ = await start_call(base + "/call", "twice-1")
        await send_audio(ws, mulaw_frames(silence(0.2, 8000)))
        ws2, answer = await start_call(base + "/call", "twice-1")
        with pytest.raises(ConnectionClosed):  # (a hang here would be a takeover: the first line's pong came late)
            await asyncio.wait_for(ws2.recv(), 10)
        await send_audio(ws, mulaw_frames(silence(0.2, 8000)))  # the first caller is untouched
        await ws.send(json.dumps({"type": "stop"}))
        summary = (await collect(ws, "summary"))[-1]
        return answer, ws2.close_code, summary

    answer, code, summary = live(loud_model_path, redis_server.url, scenario)
    assert answer["code"] == "call_in_progress" and code == 1008
    assert summary["reason"] == "completed" and summary["duration"] == pytest.approx(0.4)


@pytest.mark.parametrize("first, code, close_code", [
    ("{not json", "bad_json", 1003),
    ('{"type": "hello"}', "unknown_type", 1002),
    (b"\x00\x01", "audio_before_start", 1002),
    ('{"type": "start", "sample_rate": 12345, "encoding": "mulaw"}', "bad_sample_rate", 1002),
    ('{"type": "start", "sample_rate": 8000, "encoding": "opus"}', "bad_encoding", 1002),
    ('{"type": "start", "call_id": "bad id!", "sample_rate": 8000, "encoding": "mulaw"}', "bad_field", 1002),
])
def test_bad_first_messages_get_a_clear_error_and_close_code(loud_model_path, redis_server, rdb, first, code,
                                                            close_code):
    async def scenario(server, base):
        ws = await connect(base + "/call")
        await ws.send(first)
        err = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        return err, ws.close_code

    err, got_close = live(loud_model_path, redis_server.url, scenario)
    assert err["type"] == "error" and err["code"] == code and err["message"]
    assert got_close == close_code


def test_bad_audio_ends_only_that_call_and_others_go_on(loud_model_path, redis_server, rdb):
    async def scenario(server, base):
        good, _ = await start_call(base + "/call", "good-1")
        bad, _ = await start_call(base + "/call", "bad-1", rate=16000, encoding="pcm_s16le")
        await bad.send(b"\x00\x01\x02")  # odd PCM16 byte count
        err = json.loads(await bad.recv())
        big, _ = await start_call(base + "/call", "big-1")
        await big.send(b"\x00" * (2 << 20))  # larger than the 1 MiB limit
        with pytest.raises(ConnectionClosed):
            await big.recv()
        await send_audio(good, mulaw_frames(CALL_8K))
        await good.send(json.dumps({"type": "stop"}))
        events = await collect(good, "summary")
        return err, big.close_code, events

    err, big_close, events = live(loud_model_path, redis_server.url, scenario)
    assert err["code"] == "bad_audio" and "multiple of 2 bytes" in err["message"]
    assert big_close == 1009
    assert events[-1]["services"] == [18]


def test_token_capacity_and_origin_are_checked_before_the_upgrade(loud_model_path, redis_server, rdb, tmp_path):
    users = CredentialFile(tmp_path / "users.json")
    creds = Credentials()
    alice = creds.add("alice", "dispatcher", time.time())
    users.save(creds.users)

    async def scenario(server, base):
        statuses = []
        for kwargs in ({}, {"additional_headers": {"Authorization": "Bearer wrong"}}):
            with pytest.raises(InvalidStatus) as e:
                await connect(base + "/call", **kwargs)
            statuses.append(e.value.response.status_code)
        ok, ready = await start_call(base + "/call?token=s3cret", "t-1")
        with pytest.raises(InvalidStatus) as e:  # max_calls=1 and one is live
            await connect(base + "/call", additional_headers={"Authorization": "Bearer s3cret"})
        statuses.append(e.value.response.status_code)
        with pytest.raises(InvalidStatus) as e:
            await connect(base + f"/feed?token={alice}", origin="http://evil.example")
        statuses.append(e.value.response.status_code)
        await ok.close()
        return statuses, ready

    statuses, ready = live(loud_model_path, redis_server.url, scenario, token="s3cret", max_calls=1,
                           users_file=users.path)
    assert statuses == [401, 401, 503, 403] and ready["type"] == "ready"


def test_idle_call_is_closed(loud_model_path, redis_server, rdb):
    async def scenario(server, base):
        ws, _ = await start_call(base + "/call", "idle-1")
        err = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        return err, ws.close_code

    err, code = live(loud_model_path, redis_server.url, scenario, idle_timeout_s=0.5)
    assert err["code"] == "idle_timeout" and code == 4000


@pytest.mark.parametrize("connections", [1_000, pytest.param(10_000, marks=pytest.mark.fuzz)])
def test_many_dropped_connections_leave_the_server_up(loud_model_path, redis_server, rdb, connections):
    async def scenario(server, base):
        async def drop(i):
            try:
                ws = await connect(base + "/call", open_timeout=20)
                if i % 2:
                    await ws.send(json.dumps({"type": "start", "call_id": f"d{i}", "sample_rate": 8000,
                                              "encoding": "mulaw"}))
                ws.transport.abort()
            except (TimeoutError, OSError, InvalidStatus, ConnectionClosed):
                pass
        for batch in range(connections // 100):
            await asyncio.gather(*(drop(batch * 100 + i) for i in range(100)))
        # Dropped calls hold their place (and count toward the cap) for the resume grace, then the
        # reaper (every second) ends them: wait for that before the next call.
        for _ in range(300):
            if not server.sessions:
                break
            await asyncio.sleep(0.1)
        ws, _ = await start_call(base + "/call", "after-storm")
        await send_audio(ws, mulaw_frames(CALL_8K))
        await ws.send(json.dumps({"type": "stop"}))
        events = await collect(ws, "summary")
        status, body = await asyncio.to_thread(http_get, base.replace("ws", "http") + "/healthz")
        return events, status, len(server.sessions)

    events, status, left = live(loud_model_path, redis_server.url, scenario, resume_grace_s=0.5)
    assert events[-1]["services"] == [18] and status == 200 and left == 0


def test_redis_lost_mid_call_routes_are_kept_and_written_when_it_returns(loud_model_path, tmp_path):
    r = EmbeddedRedis(tmp_path / "r", appendfsync="always").start()

    async def scenario(server, base):
        ws, _ = await start_call(base + "/call", "outage-1")
        r.kill()  # Redis dies before the keyword is heard
        await send_audio(ws, mulaw_frames(CALL_8K))
        events = await collect(ws, "warning", timeout=20)
        events += await collect(ws, "route", timeout=20) if "route" not in [e["type"] for e in events] else []
        await asyncio.to_thread(EmbeddedRedis(tmp_path / "r", port=r.port, appendfsync="always").start)
        events += await collect(ws, "store_recovered", timeout=20)
        await ws.send(json.dumps({"type": "stop"}))
        events += await collect(ws, "summary")
        return events

    try:
        events = live(loud_model_path, r.url, scenario)
        kinds = [e["type"] for e in events]
        assert "warning" in kinds and "store_recovered" in kinds and kinds[-1] == "summary"
        c = redis.Redis.from_url(r.url, decode_responses=True)
        assert c.xlen("triage:queue:18") == 1 and c.xrange("triage:queue:18")[0][1]["call_id"] == "outage-1"
    finally:
        redis.Redis.from_url(r.url).shutdown(nosave=False)


def test_server_killed_mid_call_keeps_its_route_and_adds_none_on_resume(loud_model_path, redis_server, rdb):
    srv = ServerProcess(loud_model_path, redis_server.url).start()
    frames = mulaw_frames(CALL_8K)

    async def first_half():
        ws, _ = await start_call(srv.url + "/call", "crash-1")
        await send_audio(ws, frames[: len(frames) * 3 // 4])
        await collect(ws, "route")
        srv.kill()  # SIGKILL: no shutdown, no flush

    async def resume():
        ws, ready = await start_call(srv.url + "/call", "crash-1")
        await send_audio(ws, mulaw_frames(tone(0.9, rate=8000)) + mulaw_frames(silence(1.0, 8000)))
        await ws.send(json.dumps({"type": "stop"}))
        events = await collect(ws, "summary")
        return ready, events

    try:
        asyncio.run(first_half())
        assert rdb.xlen("triage:queue:18") == 1  # written before the kill
        srv.start()
        ready, events = asyncio.run(resume())
    finally:
        srv.stop()
    assert ready["resumed"] is False  # a new process: the call starts again under the same id
    assert events[-1]["services"] == [18]
    assert rdb.xlen("triage:queue:18") == 1  # and its route is not added twice


def test_healthz_and_metrics_after_calls(loud_model_path, redis_server, rdb):
    async def scenario(server, base):
        async def one(i):
            ws, _ = await start_call(base + "/call", f"m{i}")
            await send_audio(ws, mulaw_frames(CALL_8K))
            await ws.send(json.dumps({"type": "stop"}))
            await collect(ws, "summary")
        await asyncio.gather(*(one(i) for i in range(5)))
        http = base.replace("ws://", "http://")
        return await asyncio.to_thread(http_get, http + "/metrics"), await asyncio.to_thread(http_get,
                                                                                             http + "/healthz")

    (mstatus, metrics), (hstatus, health) = live(loud_model_path, redis_server.url, scenario)
    assert mstatus == 200 and hstatus == 200 and json.loads(health)["redis"] is True
    m = metric_samples(metrics)
    assert m["triage_calls_total"] == 5 and m['triage_queue_entries{service="18"}'] == 5
    assert m["triage_redis_up"] == 1 and m["triage_live_calls"] == 0
    assert m["triage_scoring_seconds_count"] > 0 and m['triage_scoring_seconds_bucket{le="+Inf"}'] > 0
    # one detection a call (the audio is sent faster than real time here, so the lag says nothing)
    assert m["triage_detection_lag_seconds_count"] == 5


def test_dashboard_page_and_files_are_served(loud_model_path, redis_server, rdb):
    async def scenario(server, base):
        http = base.replace("ws://", "http://")
        return [await asyncio.to_thread(http_get, http + p) for p in ("/", "/dashboard.js", "/../pyproject.toml")]

    (s1, page), (s2, js), (s3, _) = live(loud_model_path, redis_server.url, scenario)
    assert s1 == 200 and "Pompiers" in page and s2 == 200 and "WebSocket" in js and s3 == 404


def test_dispatcher_actions_through_the_feed(loud_model_path, redis_server, rdb):
    async def scenario(server, base):
        ws, _ = await start_call(base + "/call", "d-1")
        await send_audio(ws, mulaw_frames(CALL_8K))
        await ws.send(json.dumps({"type": "stop"}))
        await collect(ws, "summary")
        async with connect(base + "/feed") as alice, connect(base + "/feed") as bob:
            snap = json.loads(await alice.recv())
            await bob.recv()
            out = []
            for sock, action in ((alice, {"type": "claim", "dispatcher": "alice"}),
                                 (bob, {"type": "claim", "dispatcher": "bob"}),
                                 (alice, {"type": "reroute", "to_service": 15, "dispatcher": "alice"}),
                                 (alice, {"type": "claim", "dispatcher": "alice", "call_id": "nope"})):
                await sock.send(json.dumps({"call_id": "d-1", "service": 18, **action}))
                out.append(next(e for e in await collect(sock, "action_result")
                                if e["type"] == "action_result"))
            return snap, out

    snap, (claim, second, reroute, unknown) = live(loud_model_path, redis_server.url, scenario)
    assert [c["call_id"] for c in snap["queues"]["18"]] == ["d-1"]
    assert claim["ok"] and not second["ok"] and "already claimed by alice" in second["message"]
    assert reroute["ok"] and rdb.xlen("triage:queue:15") == 1
    assert not unknown["ok"] and "not in the 18 queue" in unknown["message"]
    actions = dispatcher_actions(rdb)
    assert [(a["action"], a["dispatcher"]) for a in actions] == [("claim", "alice"), ("reroute", "alice")]
    assert rdb.hget("triage:call:d-1", "state:18") == "rerouted"


def test_redis_unreachable_at_start_is_a_clear_error(loud_model_path):
    async def main():
        server = TriageServer(KeywordModel(loud_model_path), RouteStore("redis://127.0.0.1:1/0"),
                              ServerConfig(port=0))
        with pytest.raises(RuntimeError, match="Redis at redis://127.0.0.1:1/0 is not reachable"):
            await server.start()
        await server.store.close()
    t = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - t < 10


def test_stop_ends_a_background_loop_whose_cancellation_was_swallowed(loud_model_path, redis_server, rdb):
    """redis-py can swallow a cancellation that lands inside one of its calls; stop() must still end."""
    async def main():
        server = TriageServer(KeywordModel(loud_model_path), RouteStore(redis_server.url), ServerConfig(port=0))
        await server.start()

        async def swallows_one_cancellation():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass
            await asyncio.sleep(3600)

        stubborn = asyncio.create_task(swallows_one_cancellation())
        server._tasks.append(stubborn)
        await asyncio.sleep(0)
        t = time.monotonic()
        await asyncio.wait_for(server.stop(), 10)
        await server.store.close()
        return stubborn.cancelled(), time.monotonic() - t

    cancelled, took = asyncio.run(main())
    assert cancelled and took < 3
