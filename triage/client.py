"""Simulated call client: streams a WAV file, a synthesized sentence or the microphone over `/call`.

Real time by default (`speed` > 1 sends faster), 20 ms frames like a phone line, 8 kHz μ-law unless
told otherwise. If the connection drops, it reconnects with backoff and resumes the same call from
the last audio the server acknowledged having received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from triage.audio import AudioError, encode, read_wav, resample
from triage.protocol import bytes_per_sample

FRAME_S = 0.02


class CallFailed(RuntimeError):
    pass


def synthesize(text: str, voice: str = "mb-fr1") -> tuple[np.ndarray, int]:
    """French speech for `triage call --say`, from espeak-ng (an MBROLA voice when installed)."""
    if shutil.which("espeak-ng") is None:
        raise CallFailed("--say needs espeak-ng (scripts/install-system.sh installs it)")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "say.wav"
        for v in (voice, "fr"):
            r = subprocess.run(["espeak-ng", "-v", v, "-s", "150", "-a", "60", "-w", str(out), text],
                               capture_output=True)
            if r.returncode == 0 and out.exists() and out.stat().st_size > 44:
                wav = read_wav(out)
                return wav.samples, wav.sample_rate
    raise CallFailed(f"espeak-ng could not speak: {r.stderr.decode(errors='replace').strip()}")


def prepare(samples: np.ndarray, rate: int, encoding: str, send_rate: int) -> tuple[bytes, int]:
    """Audio as the line carries it: resampled to `send_rate` and encoded; returns (bytes, bytes/sample)."""
    x = resample(samples, rate, send_rate) if rate != send_rate else samples
    data = encode(x, encoding)
    return data, bytes_per_sample(encoding)


async def stream_call(url: str, data: bytes, width: int, rate: int, encoding: str, *, speed: float = 1.0,
                      call_id: str | None = None, token: str | None = None, metadata: dict | None = None,
                      on_event: Callable[[dict], None] = lambda e: None, max_retries: int = 8,
                      cafile: str | None = None) -> dict:
    """Send one call; returns the server's summary. Reconnects and resumes on dropped connections.
    `cafile` trusts a private certificate authority (or a self-signed server certificate) for wss://."""
    call_id = call_id or uuid.uuid4().hex[:12]
    frame = int(rate * FRAME_S) * width
    headers = {"Authorization": f"Bearer {token}"} if token else None
    sent_from = 0
    retries, backoff = 0, 0.2
    while True:
        try:
            async with connect(url, additional_headers=headers, max_size=1 << 20, open_timeout=10,
                               ssl=_tls(url, cafile)) as ws:
                await ws.send(json.dumps({"type": "start", "call_id": call_id, "sample_rate": rate,
                                          "encoding": encoding, "metadata": metadata or {}}))
                ready = json.loads(await ws.recv())
                if ready.get("type") == "error":
                    raise CallFailed(f"server refused the call: {ready.get('code')}: {ready.get('message')}")
                on_event(ready)
                sent_from = ready.get("samples_received", 0) * width  # resume where the server is
                retries, backoff = 0, 0.2
                summary = await _send_and_listen(ws, data, sent_from, frame, rate, width, speed, on_event)
                return summary
        except InvalidStatus as e:
            status = e.response.status_code
            if status in (401, 403, 404):
                raise CallFailed(f"server refused the connection: HTTP {status} "
                                 f"{e.response.body.decode(errors='replace').strip()}") from None
            err = f"HTTP {status}"
        except ssl.SSLError as e:
            raise CallFailed(f"TLS with {url} failed: {e} (a private or self-signed certificate needs --cafile)") \
                from None
        except (TimeoutError, ConnectionClosed, OSError) as e:
            err = str(e) or type(e).__name__
        retries += 1
        if retries > max_retries:
            raise CallFailed(f"call {call_id}: gave up after {max_retries} reconnections ({err})")
        on_event({"type": "reconnecting", "call_id": call_id, "attempt": retries, "reason": err})
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 5.0)


def _tls(url: str, cafile: str | None) -> ssl.SSLContext | None:
    if not url.startswith("wss:"):
        if cafile:
            raise CallFailed(f"--cafile is for wss:// URLs, not {url}")
        return None
    return ssl.create_default_context(cafile=cafile)


async def _send_and_listen(ws, data, start, frame, rate, width, speed, on_event) -> dict:
    summary: dict = {}

    async def listen():
        async for raw in ws:
            ev = json.loads(raw)
            on_event(ev)
            if ev.get("type") == "error":
                raise CallFailed(f"server error: {ev.get('code')}: {ev.get('message')}")
            if ev.get("type") == "summary":
                summary.update(ev)
                return

    listener = asyncio.create_task(listen())
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    pos = start
    try:
        while pos < len(data):
            if listener.done():
                break
            await ws.send(data[pos: pos + frame])
            pos += frame
            sent_s = (pos - start) / width / rate
            delay = t0 + sent_s / speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        if not listener.done():
            await ws.send(json.dumps({"type": "stop"}))
        await listener  # raises ConnectionClosed if the line dropped before the summary: the caller resumes
    finally:
        # When sending failed or was cancelled (Ctrl-C), the listener's own end is not the error that
        # propagates: stop it, or mark its error seen, so that asyncio never prints it as "never retrieved".
        if not listener.done():
            listener.cancel()
        elif not listener.cancelled():
            listener.exception()
    if not summary:
        raise ConnectionClosed(None, None)
    return summary


def open_microphone(rate: int, on_chunk):
    """An input stream on the default device, calling `on_chunk(float32 array)` from PortAudio's thread.
    One clear error if PortAudio, the sounddevice package or an input device is missing."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        raise CallFailed(f"--mic needs PortAudio and the sounddevice package ({e})") from None
    try:
        return sd.InputStream(samplerate=rate, channels=1, dtype="float32", blocksize=int(rate * FRAME_S),
                              callback=lambda indata, frames, t, status: on_chunk(indata[:, 0].copy()))
    except Exception as e:  # sounddevice.PortAudioError and device errors
        raise CallFailed(f"no usable microphone: {e}") from None


async def stream_microphone(url: str, token: str | None, on_event, cafile: str | None = None) -> dict:
    rate = 16000
    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue()
    stream = open_microphone(rate, lambda chunk: loop.call_soon_threadsafe(q.put_nowait, chunk))
    call_id = uuid.uuid4().hex[:12]
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        ws = await connect(url, additional_headers=headers, ssl=_tls(url, cafile))
    except (OSError, InvalidStatus) as e:
        raise CallFailed(f"cannot reach the service at {url}: {e}") from None
    async with ws:
        await ws.send(json.dumps({"type": "start", "call_id": call_id, "sample_rate": rate,
                                  "encoding": "pcm_s16le", "metadata": {"source": "microphone"}}))
        on_event(json.loads(await ws.recv()))

        async def listen():
            async for raw in ws:
                on_event(json.loads(raw))

        listener = asyncio.create_task(listen())
        print("speak now; Ctrl-C ends the call", file=sys.stderr)
        try:
            with stream:
                while True:
                    await ws.send(encode(await q.get(), "pcm_s16le"))
        finally:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await ws.send(json.dumps({"type": "stop"}))
                await asyncio.wait_for(listener, 3)
    return {}


def load_audio(path: str) -> tuple[np.ndarray, int]:
    try:
        wav = read_wav(path)
    except AudioError as e:
        raise CallFailed(str(e)) from None
    return wav.samples, wav.sample_rate
