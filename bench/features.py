"""Log-mel frontend cost: microseconds per 1 s of 16 kHz audio (whole clip), median of repeats.

    python bench/features.py   → {"features_us_per_1s_window_median": ..., ...}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from triage.features import FeatureParams, LogMel, LogMelStream  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/features.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=500, help="timed repeats; the median is printed (default 500)")
    repeats = ap.parse_args(argv).repeats
    if repeats < 1:
        ap.error(f"--repeats must be at least 1, got {repeats}")
    p = FeatureParams()
    x = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    lm = LogMel(p)
    whole, stream = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        lm.frames(x)
        whole.append(time.perf_counter() - t)
        s = LogMelStream(p, lm)
        t = time.perf_counter()
        for i in range(0, 16000, 1600):  # 100 ms chunks, as live
            s.feed(x[i: i + 1600])
        stream.append(time.perf_counter() - t)
    print(json.dumps({"features_us_per_1s_window_median": round(float(np.median(whole)) * 1e6, 1),
                      "features_us_per_1s_streamed_in_100ms_chunks_median": round(float(np.median(stream)) * 1e6, 1),
                      "n_mels": p.n_mels, "hop_ms": p.hop_length / p.sample_rate * 1000}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
