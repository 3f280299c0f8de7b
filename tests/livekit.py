"""Helpers for live-service tests: a real embedded Redis, a real server on a free port, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from onnx_models import silence, tone
from websockets.asyncio.client import connect

from triage.audio import encode
from triage.embedded_redis import free_port
from triage.model import KeywordModel
from triage.server import ServerConfig, TriageServer
from triage.store import RouteStore

FRAME = 160  # 20 ms at 8 kHz


SCENARIO_TIMEOUT_S = 120.0


@contextlib.asynccontextmanager
async def loud_timeout(what: str, seconds: float):
    """A hang fails the test with every task's stack, instead of stalling the whole run."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        out = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(limit=12, file=out)
        raise TimeoutError(f"{what} still running after {seconds:.0f} s; tasks:\n{out.getvalue()}") from None


def live(model_path, redis_url: str, scenario, **config):
    """Run `scenario(server, base_ws_url)` against an in-process server on a free port."""
    async def main():
        server = TriageServer(KeywordModel(model_path), RouteStore(redis_url),
                              ServerConfig(port=0, score_interval_s=0.02, **config))
        await server.start()
        try:
            async with loud_timeout("the scenario", SCENARIO_TIMEOUT_S):
                return await scenario(server, f"ws://127.0.0.1:{server.config.port}")
        finally:
            async with loud_timeout("server.stop()", 30):
                await server.stop()
                await server.store.close()
    return asyncio.run(main())


def mulaw_frames(samples_8k) -> list[bytes]:
    data = encode(samples_8k, "mulaw")
    return [data[i: i + FRAME] for i in range(0, len(data), FRAME)]


async def start_call(url: str, call_id: str | None = "c1", rate: int = 8000, encoding: str = "mulaw",
                     metadata: dict | None = None, **extra):
    ws = await connect(url, **extra)
    msg = {"type": "start", "sample_rate": rate, "encoding": encoding, "metadata": metadata or {"caller": "test"}}
    if call_id:
        msg["call_id"] = call_id
    await ws.send(json.dumps(msg))
    ready = json.loads(await ws.recv())
    return ws, ready


async def send_audio(ws, frames, pace: float = 0.0) -> None:
    for f in frames:
        await ws.send(f)
        if pace:
            await asyncio.sleep(pace)


async def collect(ws, until: str, timeout: float = 15.0) -> list[dict]:
    events = []
    async with asyncio.timeout(timeout):
        async for raw in ws:
            ev = json.loads(raw)
            events.append(ev)
            if ev.get("type") == until:
                break
    return events


FIRE_8K = np.concatenate([silence(0.5, 8000), tone(0.9, rate=8000), silence(1.0, 8000)])  # the loud model: 18


async def fire_call(base: str, call_id: str, pace: float = 0.005) -> list[int]:
    """A whole well-formed call that the loudness model routes to 18; returns its summary's services."""
    ws, _ = await start_call(base + "/call", call_id)
    await send_audio(ws, mulaw_frames(FIRE_8K), pace=pace)
    await ws.send(json.dumps({"type": "stop"}))
    events = await collect(ws, "summary", timeout=60)
    await ws.close()
    return events[-1]["services"]


def http_get(url: str, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric_samples(text: str) -> dict[str, float]:
    """/metrics parsed by prometheus_client: 'name{label="v",...}' (labels sorted) → value."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return out


class ServerProcess:
    """`triage serve` as a real subprocess, for crash (SIGKILL) and restart tests."""

    def __init__(self, model: Path, redis_url: str, port: int | None = None, *extra: str):
        self.model, self.redis_url = model, redis_url
        self.port = port or free_port()
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "triage.cli", "serve", "--port", str(self.port), "--redis-url", self.redis_url,
             "--model", str(self.model), *self.extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()}")
            try:
                if http_get(f"http://127.0.0.1:{self.port}/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become healthy")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> str:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.stderr.read().decode() if self.proc else ""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def dispatcher_actions(db) -> list[dict]:
    """What dispatchers did, oldest first, from the audit log (a synchronous Redis client)."""
    return [fields for _, fields in db.xrange("triage:audit") if fields["kind"] == "action"]
