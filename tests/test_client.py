"""The call client against a real server: real time pacing, resume after a dropped line, --say, --mic."""

import asyncio
import shutil
import subprocess
import sys

import numpy as np
import pytest
from livekit import ServerProcess, http_get, live, metric_samples
from onnx_models import silence, tone

from triage import client
from triage.audio import write_wav
from triage.embedded_redis import EmbeddedRedis

CALL = np.concatenate([silence(1.0), tone(0.9), silence(2.0)])


def with_server(model_path, tmp_path, scenario, **config):
    with EmbeddedRedis(tmp_path / "r") as r:
        return live(model_path, r.url, lambda server, base: scenario(server, base + "/call"), **config)


def test_streams_in_real_time_and_gets_the_route(loud_model_path, tmp_path):
    data, width = client.prepare(CALL, 16000, "mulaw", 8000)
    events = []

    async def scenario(server, url):
        loop = asyncio.get_running_loop()
        t = loop.time()
        summary = await client.stream_call(url, data, width, 8000, "mulaw", speed=2.0, on_event=events.append)
        return summary, loop.time() - t

    summary, took = with_server(loud_model_path, tmp_path, scenario)
    assert summary["services"] == [18] and [e["type"] for e in events].count("route") == 1
    assert 3.9 / 2 * 0.9 <= took < 3.9 / 2 + 3  # paced at twice real time


def test_many_calls_at_once_exit_0_when_all_complete(loud_model_path, redis_server, tmp_path):
    """`triage call FILE --calls N` against a real `triage serve`: every call routed, exit status 0."""
    wav = tmp_path / "call.wav"
    write_wav(wav, CALL[::2], 8000, "mulaw")
    srv = ServerProcess(loud_model_path, redis_server.url).start()
    try:
        r = subprocess.run([sys.executable, "-m", "triage.cli", "call", str(wav), "--calls", "20", "--speed", "2",
                            "--url", srv.url + "/call"], capture_output=True, text=True, timeout=120)
        m = metric_samples(http_get(f"http://127.0.0.1:{srv.port}/metrics")[1])
    finally:
        srv.stop()
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("services [18]") == 20 and "keepalive" not in r.stdout + r.stderr
    assert m["triage_calls_total"] == 20 and m["triage_resumes_total"] == 0


def test_dropped_line_reconnects_and_resumes(loud_model_path, tmp_path):
    data, width = client.prepare(CALL, 16000, "mulaw", 8000)
    events = []

    async def scenario(server, url):
        async def cut_the_line():
            while not server.sessions or next(iter(server.sessions.values())).duration < 1.5:
                await asyncio.sleep(0.02)
            next(iter(server.sessions.values())).ws.transport.abort()
        cutter = asyncio.create_task(cut_the_line())
        summary = await client.stream_call(url, data, width, 8000, "mulaw", speed=3.0, call_id="resume-me",
                                           on_event=events.append)
        await cutter
        return summary, await server.store.depths()

    summary, depths = with_server(loud_model_path, tmp_path, scenario)
    kinds = [e["type"] for e in events]
    assert "reconnecting" in kinds
    resumed = [e for e in events if e["type"] == "ready" and e["resumed"]]
    assert resumed and resumed[0]["samples_received"] > 0
    assert summary["services"] == [18] and summary["duration"] == pytest.approx(len(CALL) / 16000, abs=0.02)
    assert depths[18] == 1


def test_refused_token_is_one_clear_error(loud_model_path, tmp_path):
    data, width = client.prepare(CALL, 16000, "mulaw", 8000)

    async def scenario(server, url):
        with pytest.raises(client.CallFailed, match="HTTP 401"):
            await client.stream_call(url, data, width, 8000, "mulaw", token="wrong")

    with_server(loud_model_path, tmp_path, scenario, token="x")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_say_synthesizes_french():
    samples, rate = client.synthesize("Allô, il y a un incendie au deuxième étage")
    assert rate in (16000, 22050) and len(samples) / rate > 1.5 and np.abs(samples).max() > 0.05


def test_mic_without_a_device_is_one_clear_line():
    r = subprocess.run([sys.executable, "-m", "triage.cli", "call", "--mic", "--url", "ws://127.0.0.1:9/call"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().startswith("triage: ") and len(r.stderr.strip().splitlines()) == 1
    assert "microphone" in r.stderr or "PortAudio" in r.stderr


def test_call_with_unreadable_file_says_which_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    r = subprocess.run([sys.executable, "-m", "triage.cli", "call", str(bad)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "bad.wav: not a readable audio file" in r.stderr


def test_a_send_that_fails_leaves_no_listener_error_unretrieved():
    """The line drops: the listener ends with ConnectionClosed while a send fails too. The send's error
    propagates (the caller resumes), and asyncio has nothing "never retrieved" to print (it did on Ctrl-C
    in `triage demo`)."""
    import gc

    from websockets.exceptions import ConnectionClosedError

    class DroppedLine:
        def __aiter__(self):
            return self

        async def __anext__(self):
            raise ConnectionClosedError(None, None)

        async def send(self, data):
            await asyncio.sleep(0.01)  # the listener has ended by now
            raise ConnectionClosedError(None, None)

    async def main():
        unretrieved = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: unretrieved.append(ctx["message"]))
        with pytest.raises(ConnectionClosedError):
            await client._send_and_listen(DroppedLine(), b"\\0" * 1600, 0, 160, 8000, 1, 1.0, lambda ev: None)
        gc.collect()
        await asyncio.sleep(0)
        return unretrieved

    assert asyncio.run(main()) == []
