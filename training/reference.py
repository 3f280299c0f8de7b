"""The project's own reference calls, shipped in models/reference/: `triage adapt` refuses to promote a
model that does worse on them than the shipped one.

A fixed, small sample of the *test* split (voices never trained on, nothing tuned on them; phone line
with noise): every keyword in at least `per_keyword` calls, plus keyword-free calls, so that a guard
run takes seconds. Only calls spoken by espeak-ng and Kokoro voices: MBROLA's voices are non-free and
their output is used for training only, never redistributed. Reproduce: `python -m training.reference`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from triage.keywords import KEYWORDS

ROOT = Path(__file__).resolve().parents[1]


def choose(labels: list[dict], per_keyword: int, keyword_free: int, seed: int = 0) -> list[dict]:
    """Calls, in a seeded order, taken while some keyword has fewer than `per_keyword`; then keyword-free ones."""
    rng = np.random.default_rng(seed)
    order = [labels[i] for i in rng.permutation(len(labels))]
    counts = dict.fromkeys(KEYWORDS, 0)
    chosen = []
    for c in order:
        kws = {k["keyword"] for k in c["keywords"]}
        if kws and any(counts[k] < per_keyword for k in kws):
            chosen.append(c)
            for k in kws:
                counts[k] += 1
    chosen += [c for c in order if not c["keywords"]][:keyword_free]
    return sorted(chosen, key=lambda c: c["file"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=Path, default=ROOT / "data" / "calls" / "test",
                    help="labelled test calls (training.calibrate makes them)")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "reference")
    ap.add_argument("--per-keyword", type=int, default=4)
    ap.add_argument("--keyword-free", type=int, default=8)
    args = ap.parse_args(argv)
    labels = [json.loads(x) for x in (args.calls / "labels.jsonl").read_text(encoding="utf-8").splitlines()]
    labels = [c for c in labels if not any(v.startswith("mbrola:") for v in c["voices"])]
    chosen = choose(labels, args.per_keyword, args.keyword_free)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    for c in chosen:
        shutil.copy(args.calls / c["file"], args.out / c["file"])
    (args.out / "labels.jsonl").write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in chosen),
                                           encoding="utf-8")
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"{len(chosen)} calls ({sum(len(c['keywords']) for c in chosen)} keywords, "
          f"{sum(not c['keywords'] for c in chosen)} keyword-free), {size / 1e6:.1f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
