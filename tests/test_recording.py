"""Opt-in call recording: the line's bytes kept as they came, events and feedback beside them, retention."""

import asyncio
import io
import json
import time
import urllib.request

import numpy as np
import pytest
import soundfile as sf
from livekit import FIRE_8K, collect, http_get, live, mulaw_frames, send_audio, start_call
from websockets.asyncio.client import connect
from websockets.asyncio.messages import Assembler
from websockets.frames import Opcode

from triage.audio import encode
from triage.recording import CallInfo, RecordingError, Recordings
from triage.server import TriageServer


def _info(call_id="c1", started_at=1000.0, encoding="mulaw"):
    return CallInfo(call_id, 8000, encoding, started_at, {"caller": "x"}, "kws12@abc")


def _get_bytes(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "audio/wav"
        return r.read()


def _data_chunk(path) -> bytes:
    raw = path.read_bytes()
    at = raw.index(b"data")
    size = int.from_bytes(raw[at + 4: at + 8], "little")
    return raw[at + 8: at + 8 + size]


@pytest.mark.parametrize("encoding", ["mulaw", "alaw", "pcm_s16le", "f32le"])
def test_the_line_is_kept_in_its_own_encoding_byte_for_byte(tmp_path, encoding):
    rng = np.random.default_rng(1)
    data = encode(rng.uniform(-0.9, 0.9, 4000).astype(np.float32), encoding)
    if encoding == "mulaw":  # mu-law's two zeros (0x7F, 0xFF) decode alike; the recorder keeps 0xFF
        data = data.replace(b"\x7f", b"\xff")
    rec = Recordings(tmp_path)
    rec.open(_info(encoding=encoding), offset=0)
    step = 333 * {"pcm_s16le": 2, "f32le": 4}.get(encoding, 1)  # frames of whole samples, any count
    for i in range(0, len(data), step):
        rec.write("c1", data[i: i + step])
    rec.close("c1")
    (seg,) = (tmp_path / "c1").glob("audio-*.wav")
    assert _data_chunk(seg) == data
    assert sf.info(str(seg)).samplerate == 8000


def test_segments_events_clip_and_purge(tmp_path):
    rec = Recordings(tmp_path)
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 8000)).astype(np.float32)
    rec.open(_info(), offset=0)
    rec.write("c1", encode(tone[:8000], "mulaw"))
    rec.event("c1", {"type": "detection", "keyword": "gaz", "time": 0.9})
    rec.close("c1")
    # the call resumed elsewhere and its audio was sent again from the start, then carried on
    rec.open(_info(), offset=0)
    rec.write("c1", encode(tone, "mulaw"))
    rec.close("c1")
    rec.event("not-recorded", {"type": "detection"})
    assert sorted(p.name for p in (tmp_path / "c1").iterdir()) == [
        "audio-000000000000-2.wav", "audio-000000000000.wav", "call.json", "events.jsonl"]
    assert not (tmp_path / "not-recorded").exists()
    assert rec.events("c1") == [{"type": "detection", "keyword": "gaz", "time": 0.9}]
    assert rec.duration("c1") == 2.0
    x = rec.audio("c1")
    assert len(x) == 16000 and np.max(np.abs(x - tone)) < 0.02
    clip = sf.read(io.BytesIO(rec.clip("c1", 0.5, 1.25)))
    assert clip[1] == 8000 and len(clip[0]) == 6000
    with pytest.raises(RecordingError, match="no audio between 5.0 s and 6.0 s .it lasts 2.0 s"):
        rec.clip("c1", 5, 6)
    with pytest.raises(RecordingError, match="no recording of call 'c2'"):
        rec.clip("c2", 0, 1)
    with pytest.raises(RecordingError, match="is not a call id"):
        rec.clip("../etc", 0, 1)
    assert rec.purge("c1") and not rec.purge("c1") and not (tmp_path / "c1").exists()


def test_retention_deletes_what_is_past_its_date_and_nothing_else(tmp_path):
    rec = Recordings(tmp_path)
    day = 86_400
    now = 100 * day
    for call_id, age_days in (("old", 31), ("edge", 29.9), ("new", 1), ("old-but-live", 40)):
        rec.open(_info(call_id, started_at=now - age_days * day), offset=0)
        rec.write(call_id, b"\xff" * 800)
        rec.close(call_id)
    assert rec.purge_expired(30, keep={"old-but-live"}, now=now) == ["old"]
    assert sorted(c.call_id for c in rec.calls()) == ["edge", "new", "old-but-live"]


def test_a_recorded_live_call_keeps_audio_events_and_feedback(loud_model_path, redis_server, rdb, tmp_path):
    frames = mulaw_frames(FIRE_8K)

    async def scenario(server, base):
        async with connect(base + "/feed") as feed:
            json.loads(await feed.recv())
            ws, _ = await start_call(base + "/call", "rec-1")
            started = await collect(feed, "call_started")
            await send_audio(ws, frames, pace=0.002)
            await ws.send(json.dumps({"type": "stop"}))
            events = await collect(ws, "summary")
            await ws.close()
            await feed.send(json.dumps({"type": "confirm", "call_id": "rec-1", "service": 18,
                                        "dispatcher": "alice"}))
            result = await collect(feed, "action_result")
            det = next(e for e in events if e["type"] == "detection")
            port = server.config.port
            start, end = max(0, det["time"] - 1), det["time"] + 0.5
            clip = await asyncio.to_thread(_get_bytes, f"http://127.0.0.1:{port}/recordings/rec-1/clip"
                                                       f"?start={start:.2f}&end={end:.2f}")
            bad = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/recordings/rec-1/clip?start=3")
            other = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/recordings/nope/clip?start=0&end=1")
            return started[-1], events, result[-1], clip, bad, other

    started, events, result, clip, bad, other = live(loud_model_path, redis_server.url, scenario,
                                                     record_dir=tmp_path)
    assert started["recorded"] is True and result["ok"]
    (seg,) = (tmp_path / "rec-1").glob("audio-*.wav")
    assert _data_chunk(seg) == b"".join(frames).replace(b"\x7f", b"\xff")
    kinds = [e["type"] for e in Recordings(tmp_path).events("rec-1")]
    assert kinds == ["detection", "route", "summary", "dispatch"]
    assert Recordings(tmp_path).events("rec-1")[-1]["action"] == "confirm"
    samples, rate = sf.read(io.BytesIO(clip))
    assert rate == 8000 and 0.5 < len(samples) / rate <= 1.5 and np.abs(samples).max() > 0.1  # the tone, heard
    assert bad[0] == 400 and "expected ?start=S&end=E" in bad[1]
    assert other[0] == 404 and "no recording of call 'nope'" in other[1]
    assert rdb.hget("triage:call:rec-1", "recorded") == "1"


def test_audio_before_and_after_ready_is_kept_in_the_order_sent(loud_model_path, redis_server, rdb, tmp_path,
                                                                   monkeypatch):
    """Once a call is open its frames skip websockets' message queue (server.CallConnection); frames that
    came before wait in the queue. A caller who streams without waiting for `ready` sends both kinds: the
    line is recorded byte for byte in the order sent, and the later frames went straight to the call."""
    rng = np.random.default_rng(3)
    frames = [bytes(rng.integers(0, 256, 160, dtype=np.uint8)).replace(b"\x7f", b"\xff") for _ in range(300)]
    queued = []
    put, open_call = Assembler.put, TriageServer._open

    def counting_put(self, frame):
        if frame.opcode is Opcode.BINARY:
            queued.append(frame.data)
        put(self, frame)

    async def slow_open(self, msg, ws):
        await asyncio.sleep(0.3)  # the caller's first frames arrive meanwhile, before the call is open
        return await open_call(self, msg, ws)

    monkeypatch.setattr(Assembler, "put", counting_put)
    monkeypatch.setattr(TriageServer, "_open", slow_open)

    async def scenario(server, base):
        async with connect(base + "/call") as ws:
            await ws.send(json.dumps({"type": "start", "call_id": "order-1", "sample_rate": 8000,
                                      "encoding": "mulaw"}))
            await send_audio(ws, frames, pace=0.002)  # 0.6 s, across the moment the call opens
            await ws.send(json.dumps({"type": "stop"}))
            return await collect(ws, "summary")

    events = live(loud_model_path, redis_server.url, scenario, record_dir=tmp_path)
    assert [e["type"] for e in events][::len(events) - 1] == ["ready", "summary"]
    (seg,) = (tmp_path / "order-1").glob("audio-*.wav")
    assert _data_chunk(seg) == b"".join(frames)
    # The first frames waited in the queue until the call was open, the later ones went straight to it
    assert queued == frames[:len(queued)] and 0 < len(queued) < 270, f"{len(queued)} of 300 frames queued"


def test_unrecorded_server_has_no_recordings(loud_model_path, redis_server, rdb, tmp_path):
    async def scenario(server, base):
        return await asyncio.to_thread(http_get, f"http://127.0.0.1:{server.config.port}/recordings/x/clip"
                                                 "?start=0&end=1")

    status, body = live(loud_model_path, redis_server.url, scenario)
    assert status == 404 and "--record" in body


def test_the_server_enforces_retention_on_ended_calls_only(loud_model_path, redis_server, rdb, tmp_path):
    root = tmp_path / "recordings"
    rec = Recordings(root)
    rec.open(_info("ancient", started_at=time.time() - 40 * 86_400), offset=0)
    rec.write("ancient", b"\xff" * 800)
    rec.close("ancient")

    async def scenario(server, base):
        ws, _ = await start_call(base + "/call", "live-now")
        await send_audio(ws, mulaw_frames(FIRE_8K[:4000]))
        meta = root / "live-now" / "call.json"  # a live call past the retention period is still kept
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "started_at": time.time() - 50 * 86_400}))
        deadline = time.monotonic() + 10
        while (root / "ancient").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a few more retention rounds while the old call is live
        await ws.close()
        return sorted(p.name for p in root.iterdir())

    left = live(loud_model_path, redis_server.url, scenario, record_dir=root, retention_days=30,
                retention_check_s=0.1)
    assert left == ["live-now"]


def test_a_recording_that_fails_is_said_once_and_the_call_is_still_routed(loud_model_path, redis_server, rdb,
                                                                         tmp_path, caplog):
    def disk_full(call_id, data):
        raise OSError(28, "No space left on device")

    async def scenario(server, base):
        server.recordings.write = disk_full
        async with connect(base + "/feed") as feed:
            json.loads(await feed.recv())
            ws, _ = await start_call(base + "/call", "full-1")
            await send_audio(ws, mulaw_frames(FIRE_8K), pace=0.002)
            await ws.send(json.dumps({"type": "stop"}))
            summary = (await collect(ws, "summary"))[-1]
            await ws.close()
            seen = await collect(feed, "call_ended")
        return summary, [e for e in seen if e["type"] == "warning"]

    summary, warnings = live(loud_model_path, redis_server.url, scenario, record_dir=tmp_path / "rec")
    assert summary["services"] == [18] and rdb.xlen("triage:queue:18") == 1
    assert [(w["code"], w["call_id"]) for w in warnings] == [("recording_failed", "full-1")]
    assert "No space left on device" in warnings[0]["message"]
    assert [r.getMessage() for r in caplog.records if "recording of call" in r.getMessage()] == [
        "recording of call full-1 failed, the call goes on unrecorded: [Errno 28] No space left on device"]
