"""How many live calls one CPU core carries in real time, with batched scoring.

Each 100 ms tick of the server's ScoringEngine: every call's 100 ms of 8 kHz μ-law speech (the demo calls) is
decoded and resampled to 16 kHz, all calls' new frames get their log-mel in one FFT, then all due windows
are scored in one model call. A load is real time if the median tick takes less than 100 ms. Pinned to one
core, onnxruntime on 1 thread.
Prints one JSON object per load, then a summary line: {"max_realtime_calls": N, ...}.

    python bench/calls_per_core.py [--model models/kws12.onnx] [--loads 50,100,200,300,400]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from triage.audio import encode, read_wav, resample  # noqa: E402
from triage.demo import demo_calls  # noqa: E402
from triage.engine import ScoringEngine  # noqa: E402
from triage.model import KeywordModel  # noqa: E402

TICK_S = 0.1


def speech() -> np.ndarray:
    """The shipped demo calls end to end at 8 kHz: running speech with keywords, as calls carry (the model's
    cost depends on what it hears once the manifest skips windows, so noise would flatter it)."""
    parts = [read_wav(p) for p in demo_calls()]
    return np.concatenate([p.samples if p.sample_rate == 8000 else resample(p.samples, p.sample_rate, 8000)
                           for p in parts]).astype(np.float32)


def run_load(model: KeywordModel, n: int, seconds: float, source: np.ndarray) -> dict:
    chunk = int(8000 * TICK_S)
    # Each call starts elsewhere in the speech, so that calls do not hear the same window at the same tick.
    audio = [encode(np.resize(np.roll(source, -k * 7 * chunk), int(8000 * seconds)), "mulaw") for k in range(n)]
    engine = ScoringEngine(model)  # what the server's tick runs
    for k in range(n):
        engine.add(f"c{k}", 8000, "mulaw")
    ticks = []
    for i in range(0, len(audio[0]) - chunk + 1, chunk):
        for k in range(n):
            engine.receive(f"c{k}", audio[k][i: i + chunk])
        t = time.perf_counter()
        engine.tick()
        ticks.append(time.perf_counter() - t)
    ticks = np.array(ticks[12:])  # after the first window fills
    med = float(np.median(ticks))
    p95 = float(np.percentile(ticks, 95))
    return {"calls": n, "tick_median_ms": round(med * 1000, 2), "tick_p95_ms": round(p95 * 1000, 2),
            "rtf_total": round(med / TICK_S, 4), "rtf_per_call": round(med / TICK_S / n, 6),
            "realtime": bool(med < TICK_S)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--loads", default="50,100,200,300,400,600")
    ap.add_argument("--seconds", type=float, default=10.0, help="audio per call per load")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    model = KeywordModel(args.model, threads=1)
    source = speech()
    best = 0
    results = []
    for n in map(int, args.loads.split(",")):
        r = run_load(model, n, args.seconds, source)
        results.append(r)
        print(json.dumps(r), flush=True)
        if r["realtime"]:
            best = max(best, n)
    per_call = [r["rtf_per_call"] for r in results]
    print(json.dumps({"max_realtime_calls": best, "rtf_per_call_median": float(np.median(per_call)),
                      "model": str(model.path), "peak_rss_mb": round(
                          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
