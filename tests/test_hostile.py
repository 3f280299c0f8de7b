"""Hostile clients against a live server: a handshake or a frame dribbled byte by byte (slowloris) and a
connection flood above the cap are dropped or refused, while a well-formed call beside them routes."""

import asyncio
import json
import time

from livekit import FIRE_8K, collect, fire_call, live, mulaw_frames, send_audio, start_call
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus


async def dribble(port: int, data: bytes, every: float, limit: float) -> float | None:
    """Send `data` one byte per `every` seconds; the time at which the server closed, or None."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    try:
        for b in data:
            if time.monotonic() - t0 > limit:
                return None
            writer.write(bytes([b]))
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1024), every) == b"":
                    return time.monotonic() - t0
            except TimeoutError:
                pass
        rest = await asyncio.wait_for(reader.read(), limit)
        return time.monotonic() - t0 if rest is not None else None
    except (ConnectionError, TimeoutError):
        return time.monotonic() - t0
    finally:
        writer.close()


def test_slowloris_handshake_and_frame_are_dropped_and_others_unaffected(loud_model_path, redis_server, rdb):
    handshake = (b"GET /call HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")

    async def scenario(server, base):
        port = server.config.port
        slow_handshakes = [asyncio.create_task(dribble(port, handshake, 0.2, 10)) for _ in range(20)]

        async def slow_frame():
            ws, _ = await start_call(base + "/call", "dribble-1")
            # a binary frame header announcing 160 bytes, then its bytes one by one: never a whole frame
            raw = ws.transport
            raw.write(bytes([0x82, 0x80 | 126]) + (160).to_bytes(2, "big") + b"\x00\x00\x00\x00")
            t0 = time.monotonic()
            for _ in range(160):  # 16 s if nobody stops it
                raw.write(b"\x01")
                await asyncio.sleep(0.1)
                if ws.state.name != "OPEN" or raw.is_closing():
                    return time.monotonic() - t0
            return None

        frame = asyncio.create_task(slow_frame())
        good = await fire_call(base, "beside-slowloris")
        results = [await t for t in slow_handshakes], await frame, good
        await asyncio.sleep(0.5)
        return (*results, list(server.sessions))

    closed_at, frame_closed_at, good, left = live(loud_model_path, redis_server.url, scenario,
                                                  handshake_timeout_s=1.0, idle_timeout_s=1.0)
    assert good == [18]
    assert all(t is not None and t < 3.0 for t in closed_at), closed_at  # dropped after ~1 s, not 10
    assert frame_closed_at is not None and frame_closed_at < 4.0 and left == []  # the idle reaper (1 s) ended it


def test_connection_flood_above_the_cap_gets_503_fast_and_live_calls_go_on(loud_model_path, redis_server, rdb):
    async def scenario(server, base):
        holders = [(await start_call(base + "/call", f"hold-{i}"))[0] for i in range(5)]  # the cap is reached

        async def knock():
            t0 = time.monotonic()
            try:
                ws = await connect(base + "/call", open_timeout=10)
                await ws.close()
                return 101, time.monotonic() - t0
            except InvalidStatus as e:
                return e.response.status_code, time.monotonic() - t0
        knocks = await asyncio.gather(*(knock() for _ in range(300)))

        async def finish(ws):  # the calls that were live during the flood go on as if nothing happened
            await send_audio(ws, mulaw_frames(FIRE_8K), pace=0.002)
            await ws.send(json.dumps({"type": "stop"}))
            return (await collect(ws, "summary", timeout=30))[-1]["services"]
        return knocks, await asyncio.gather(*(finish(ws) for ws in holders))

    knocks, goods = live(loud_model_path, redis_server.url, scenario, max_calls=5)
    assert [s for s, _ in knocks] == [503] * 300
    assert sorted(t for _, t in knocks)[len(knocks) // 2] < 2.0  # refused quickly (median)
    assert goods == [[18]] * 5


def test_odd_methods_and_traversal_on_the_http_routes_are_refused(loud_model_path, redis_server, rdb):
    requests = [b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
                b"DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /%2e%2e/pyproject.toml HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /dashboard.js/../../pyproject.toml HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /..%2f..%2fpyproject.toml HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET //etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
                b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40)]  # a TLS hello on the plain port

    async def ask(port, raw):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        await writer.drain()
        try:
            reply = await asyncio.wait_for(reader.read(4096), 5)
        except (ConnectionError, TimeoutError):
            reply = b""
        writer.close()
        return reply

    async def scenario(server, base):
        replies = [await ask(server.config.port, raw) for raw in requests]
        return replies, await fire_call(base, "after-odd-http")

    replies, good = live(loud_model_path, redis_server.url, scenario)
    for raw, reply in zip(requests, replies, strict=True):
        status = reply.split(b" ", 2)[1] if reply.startswith(b"HTTP/1.1 ") else b"closed"
        assert status in (b"400", b"404", b"405", b"closed"), (raw[:40], reply[:80])
        if not raw.startswith(b"GET") and status != b"closed":
            assert status == b"405" or raw.startswith(b"\x16"), (raw[:40], reply[:80])
        assert b"[project]" not in reply and b"root:" not in reply
    assert good == [18]
