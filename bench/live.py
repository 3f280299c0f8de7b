"""The live service under load, end to end: `triage serve` in its own process(es), real Redis, real
websockets over loopback, and this process as the load generator.

Each simulated call streams a labelled test call (looped to --call-seconds) in real time, in 20 ms
frames of 8 kHz G.711, through `triage.client.stream_call` (the `triage call` code); calls start
spread over --ramp seconds. Measured per load:

  routed_as_replay   calls whose final services equal what `triage replay` gives on the same audio
                     (the service under load must lose nothing the model finds offline)
  routed_as_labels   calls whose final services equal the labels
  dropped / errors   calls that reconnected, or failed
  latency            wall-clock time from the moment a keyword's last audio was sent to the moment its
                     detection event arrived (keywords the call detected), p50 / p95
  service_delay      the service's own share of it: from the moment the audio of the window that fired
                     was sent (its end, in call time) to the detection's arrival, every detection, p50 / p95
  model_latency      the model's own share: the same audio replayed offline, from each keyword's end to the
                     end of the window that fires on it, every keyword of every call it finds, p50 / p95
                     (the latency can be no lower than this however fast the server)
  cpu_ms_per_call_s  CPU of the server processes (Redis apart) per second of call audio streamed
  calls_per_core     1000 / cpu_ms_per_call_s: how many real-time calls one fully used core carries
  model_ms_per_window  the host's speed, measured once before the loads: the model alone on 64 windows
                     (one thread, median of 7, every member), so figures from hosts "of the same kind"
                     can be compared (they differ ~2×)

Prints one JSON object per load. Needs the test calls of `python -m training.calibrate`
(data/calls/test with labels.jsonl) or --calls-dir with a labels.jsonl.

    python bench/live.py --loads 40,100,200 [--workers 2] [--call-seconds 30] [--ramp 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from triage import eventloop  # noqa: E402
from triage.audio import decode, encode, read_wav_16k, resample  # noqa: E402
from triage.client import stream_call  # noqa: E402
from triage.model import KeywordModel  # noqa: E402
from triage.replay import MATCH_AFTER_END_S, load_labels, replay_samples  # noqa: E402
from triage.server import ServerConfig  # noqa: E402

RATE, ENCODING = 8000, "alaw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(root_pid: int) -> dict[str, float]:
    """utime + stime of a process tree from /proc, split into Redis and the rest."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"server": 0.0, "redis": 0.0}
    stack = [root_pid]
    while stack:
        pid = stack.pop()
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out["redis" if "redis" in comm or "valkey" in comm else "server"] += (int(fields[11]) + int(fields[12])) / tick
        stack += [int(c) for c in children]
    return out


@dataclass(frozen=True)
class Script:
    """A caller's audio as the line carries it, and the keyword times it contains."""
    name: str
    audio: bytes
    keywords: list[tuple[str, float, float]]
    label_services: list[int]


@dataclass
class Call:
    script: Script
    events: list[tuple[float, dict]] = field(default_factory=list)
    summary: dict | None = None
    error: str | None = None

    def on_event(self, ev: dict) -> None:
        self.events.append((time.monotonic(), ev))


def load_scripts(calls_dir: Path, n_files: int, seconds: float) -> list[Script]:
    """Labelled calls, each looped to `seconds` (its keyword times repeated with it)."""
    labels = load_labels(calls_dir / "labels.jsonl")
    out = []
    for f in sorted(labels)[:n_files]:
        x = read_wav_16k(calls_dir / f)
        reps, dur = max(1, int(np.ceil(seconds * 16000 / len(x)))), len(x) / 16000
        out.append(Script(f, encode(resample(np.tile(x, reps), 16000, RATE), ENCODING),
                          [(k.keyword, k.start + r * dur, k.end + r * dur) for r in range(reps)
                           for k in labels[f].keywords], sorted(labels[f].services)))
    return out


async def run_load(url: str, scripts: list[Script], n: int, ramp: float) -> list[Call]:
    calls = [Call(scripts[i % len(scripts)]) for i in range(n)]

    async def one(i: int, c: Call) -> None:
        await asyncio.sleep(ramp * i / n)
        try:
            c.summary = await stream_call(url, c.script.audio, 1, RATE, ENCODING, call_id=f"load-{n}-{i}",
                                          on_event=c.on_event, max_retries=3)
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported
            c.error = f"{type(e).__name__}: {e}"

    await asyncio.gather(*(one(i, c) for i, c in enumerate(calls)))
    return calls


@dataclass
class Offline:
    """What `triage replay` finds in exactly the audio a caller sends."""
    services: list[int]
    detections: list[tuple[str, float]]  # (keyword, end of the window that fired, in call time)


def _hit(detections: list[tuple[float, str, float]], keyword: str, start: float, end: float) -> float | None:
    """The first (arrival, keyword, call time) detection that counts for a spoken keyword, as replay scores."""
    return next((at for at, kw, t in detections if kw == keyword and start <= t <= end + MATCH_AFTER_END_S), None)


def _percentile(values: list[float], q: float) -> float:
    return round(float(np.nanpercentile(np.array(values) if values else np.array([np.nan]), q)), 3)


def measure(calls: list[Call], offline: dict[str, Offline]) -> dict:
    latencies, delays, model = [], [], []
    for c in calls:
        ready = next((t for t, e in c.events if e.get("type") == "ready"), None)
        dets = [(t, e["keyword"], e["time"]) for t, e in c.events if e.get("type") == "detection"]
        if ready is None:
            continue
        delays += [t - (ready + at) for t, _, at in dets]
        replayed = [(t, kw, t) for kw, t in offline[c.script.name].detections]
        for kw, start, end in c.script.keywords:
            hit = _hit(dets, kw, start, end)
            if hit is not None:
                latencies.append(hit - (ready + end))
            fired = _hit(replayed, kw, start, end)
            if fired is not None:
                model.append(fired - end)
    done = [c for c in calls if c.summary is not None]
    return {
        "calls": len(calls), "completed": len(done), "errors": sum(c.error is not None for c in calls),
        "dropped": sum(any(e.get("type") == "reconnecting" for _, e in c.events) for c in calls),
        "routed_as_replay": sum(c.summary is not None
                                and sorted(c.summary["services"]) == offline[c.script.name].services for c in calls),
        "routed_as_labels": sum(c.summary is not None and sorted(c.summary["services"]) == c.script.label_services
                                for c in calls),
        "keyword_detections_timed": len(latencies),
        "latency_p50_s": _percentile(latencies, 50), "latency_p95_s": _percentile(latencies, 95),
        "service_delay_p50_s": _percentile(delays, 50), "service_delay_p95_s": _percentile(delays, 95),
        "model_latency_p50_s": _percentile(model, 50), "model_latency_p95_s": _percentile(model, 95),
        "first_errors": [c.error for c in calls if c.error][:3],
    }


def model_ms_per_window(model: KeywordModel, batch: int = 64, repeats: int = 7) -> float:
    shape = (batch, model.features.window_frames, model.features.n_mels)
    x = np.random.default_rng(0).normal(-40, 10, shape).astype(np.float32)
    model.predict_full(x)  # warm-up; predict_full: a gate would turn random windows away
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.predict_full(x)
        times.append(time.perf_counter() - t)
    return round(1000 * float(np.median(times)) / batch, 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loads", default="40,100,200", help="comma-separated numbers of simultaneous calls")
    ap.add_argument("--workers", type=int, default=1, help="`triage serve --workers`")
    ap.add_argument("--call-seconds", type=float, default=30.0, help="each call's length (its file looped)")
    ap.add_argument("--ramp", type=float, default=10.0, help="calls start spread over this many seconds")
    ap.add_argument("--files", type=int, default=40, help="distinct labelled calls used")
    ap.add_argument("--calls-dir", type=Path, default=ROOT / "data" / "calls" / "test")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--server-cpus", default=None, help="taskset CPU list for the server, e.g. 0")
    ap.add_argument("--score-interval", type=float, default=None, help="`triage serve --score-interval` (s)")
    args = ap.parse_args(argv)
    if not (args.calls_dir / "labels.jsonl").exists():
        sys.exit(f"{args.calls_dir}/labels.jsonl not found: run `python -m training.calibrate` or give --calls-dir")

    model = KeywordModel(args.model)
    host_ms = model_ms_per_window(model)
    scripts = load_scripts(args.calls_dir, args.files, args.call_seconds)
    # What the model finds offline in exactly the audio each caller sends.
    offline = {}
    for s in scripts:
        r = replay_samples(model, resample(decode(s.audio, ENCODING), RATE, 16000), s.name)
        offline[s.name] = Offline(sorted(r.services), [(d.keyword, d.time) for d in r.detections])

    for n in [int(x) for x in args.loads.split(",")]:
        port = free_port()
        with tempfile.TemporaryDirectory() as data_dir:
            cmd = [sys.executable, "-m", "triage.cli", "serve", "--port", str(port), "--workers", str(args.workers)]
            if args.model:
                cmd += ["--model", str(args.model)]
            if args.score_interval:
                cmd += ["--score-interval", str(args.score_interval)]
            if args.server_cpus:
                cmd = ["taskset", "-c", args.server_cpus, *cmd]
            server = subprocess.Popen(cmd, env={**os.environ, "TRIAGE_DATA_DIR": data_dir},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                for _ in range(300):
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                        break
                    except OSError:
                        if server.poll() is not None:
                            sys.exit(f"server exited: {server.stderr.read().decode()}")
                        time.sleep(0.1)
                before, t = cpu_seconds(server.pid), time.monotonic()
                calls = eventloop.run(run_load(f"ws://127.0.0.1:{port}/call", scripts, n, args.ramp))
                wall = time.monotonic() - t
                after = cpu_seconds(server.pid)
            finally:
                server.terminate()
                server.wait(30)
        call_seconds = sum(len(c.script.audio) / RATE for c in calls)
        cpu = {k: after[k] - before[k] for k in after}
        r = measure(calls, offline)
        ms = 1000 * cpu["server"] / call_seconds
        r.update(workers=args.workers, event_loop=eventloop.chosen(),
                 score_interval_s=args.score_interval or ServerConfig.score_interval_s,
                 model_ms_per_window=host_ms, wall_s=round(wall, 1), call_seconds=round(call_seconds),
                 server_cpu_s=round(cpu["server"], 1), redis_cpu_s=round(cpu["redis"], 1),
                 cpu_ms_per_call_s=round(ms, 2), calls_per_core=round(1000 / ms))
        print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
