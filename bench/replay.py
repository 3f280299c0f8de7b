"""`triage replay` of one long recording, as a user runs it: peak memory and speed.

Builds an 8 kHz G.711 A-law WAV of --minutes from the bundled demo calls (looped), then runs
`triage replay FILE --json` in a child process pinned to one core (onnxruntime on one thread) and
reads the child's peak RSS and CPU time from the kernel. Prints one JSON object.

    python bench/replay.py [--minutes 60] [--encoding alaw] [--model models/kws12.onnx]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from triage.audio import read_wav, resample  # noqa: E402
from triage.demo import demo_calls  # noqa: E402


def long_recording(path: Path, minutes: float, encoding: str) -> float:
    import soundfile as sf

    calls = [resample(w.samples, w.sample_rate, 8000) for w in map(read_wav, demo_calls())]
    total = int(minutes * 60 * 8000)
    subtype = {"alaw": "ALAW", "mulaw": "ULAW", "pcm_s16le": "PCM_16"}[encoding]
    with sf.SoundFile(str(path), "w", 8000, 1, subtype=subtype, format="WAV") as f:
        written, i = 0, 0
        while written < total:
            x = calls[i % len(calls)][: total - written]
            f.write(np.clip(x, -1, 32767 / 32768))
            written += len(x)
            i += 1
    return total / 8000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--encoding", default="alaw", choices=("alaw", "mulaw", "pcm_s16le"))
    ap.add_argument("--cpu", default="0", help="core the replay is pinned to (taskset)")
    ap.add_argument("--model", type=Path, default=None, help="a keyword model other than the shipped one")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "long.wav"
        seconds = long_recording(path, args.minutes, args.encoding)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.monotonic()
        r = subprocess.run(["taskset", "-c", args.cpu, sys.executable, "-m", "triage.cli", "replay", str(path),
                            "--json", *(["--model", str(args.model.resolve())] if args.model else [])],
                           capture_output=True, text=True, cwd=ROOT)
        wall = time.monotonic() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"replay failed: {r.stderr}")
    out = json.loads(r.stdout.splitlines()[0])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(json.dumps({"audio_minutes": round(seconds / 60, 1), "encoding": args.encoding,
                      "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                      "x_realtime_wall": round(seconds / wall), "x_realtime_cpu": round(seconds / cpu),
                      "peak_rss_mb": round(after.ru_maxrss / 1024), "detections": len(out["detections"]),
                      "services": out["services"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
