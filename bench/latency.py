"""Detection latency (firing time minus keyword end) and recall on labelled calls, through the live core.

    python bench/latency.py [CALLS_DIR]   (default: data/calls/test, made by `python -m training.calibrate`)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from triage.audio import read_wav_16k  # noqa: E402
from triage.model import KeywordModel  # noqa: E402
from triage.replay import load_labels, replay_samples, score  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/latency.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("calls", type=Path, nargs="?", default=ROOT / "data" / "calls" / "test",
                    help="a folder of calls with labels.jsonl (default: data/calls/test)")
    ap.add_argument("--model", type=Path, default=None, help="the keyword model (default: the shipped one)")
    args = ap.parse_args(argv)
    calls = args.calls
    if not (calls / "labels.jsonl").exists():
        print(f"no {calls / 'labels.jsonl'}: make it with `python -m training.calibrate`", file=sys.stderr)
        return 2
    model = KeywordModel(args.model)
    labels = load_labels(calls / "labels.jsonl")
    results = [replay_samples(model, read_wav_16k(calls / f), f) for f in labels]
    m = score(results, labels)
    print(json.dumps({**m.summary(), "calls_dir": str(calls)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
