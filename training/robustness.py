"""How sure a model stays of unheard voices' keywords as the phone line gets noisier.

Each keyword sentence of a held-out split is put on a phone line clean, then with background noise (the
calls' own: `calls.degrade`, held-out babble, music and coloured noise) at falling signal-to-noise ratios.
For every keyword the full model's highest posterior for that keyword is taken over the spotter windows
ending from 0.1 s before the word's end to 1 s after it, and the table gives, per engine and condition, the
share of keywords whose peak reaches 0.5, 0.9 and 0.99 (the shipped thresholds are 0.99 and above). The
calls of `training.calibrate` mix these conditions (5–20 dB), so this shows which of voice and noise loses
the keywords the calls miss.

    python -m training.robustness --model models/kws12.onnx --split test --per-engine 100
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training import speech
from training.augment import telephone
from training.calibrate import call_banks
from training.calls import degrade
from triage.model import KeywordModel

LEVELS = (0.5, 0.9, 0.99)
PAD_S = (0.5, 1.0)  # silence around each sentence: the windows after the last word exist
SPAN_S = (-0.1, 1.0)  # windows ending this long after the keyword's end may find it


def window_ends(model: KeywordModel, n_frames: int, hop_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Start frames of the spotter windows over `n_frames` log-mel frames, and each window's end (s)."""
    p = model.features
    starts = np.arange(0, n_frames - p.window_frames + 1, hop_frames)
    ends = ((starts + p.window_frames - 1) * p.hop_length + p.n_fft) / p.sample_rate
    return starts, ends


def keyword_peaks(model: KeywordModel, audio: np.ndarray, words, hop_frames: int = 10) -> list[float]:
    """The full model's peak posterior for each (keyword, start, end) of `words` in 16 kHz `audio`."""
    f = model.extractor.frames(audio)
    starts, ends = window_ends(model, len(f), hop_frames)
    if len(starts) == 0:
        return [0.0 for _ in words]
    posts = model.predict_full(np.stack([f[s: s + model.features.window_frames] for s in starts]))
    out = []
    for kw, _, end in words:
        near = (ends >= end + SPAN_S[0]) & (ends <= end + SPAN_S[1])
        out.append(float(posts[near, model.classes.index(kw)].max()) if near.any() else 0.0)
    return out


def measure(model: KeywordModel, utts: list[speech.Utterance], snrs: list[float | None], banks, seed: int = 1):
    """{snr: peaks of every keyword of `utts`}; None is the clean line."""
    rng = np.random.default_rng(seed)
    rate = model.features.sample_rate
    out: dict = {}
    for snr in snrs:
        peaks = []
        for u in utts:
            x = np.concatenate([np.zeros(int(PAD_S[0] * rate), np.float32), u.audio,
                                np.zeros(int(PAD_S[1] * rate), np.float32)])
            codec = "mulaw" if rng.random() < 0.5 else "alaw"
            line = telephone(x, codec) if snr is None else degrade(x, rng, banks, snr, codec)
            peaks += keyword_peaks(model, line, [(k, s + PAD_S[0], e + PAD_S[0]) for k, s, e in u.words])
        out[snr] = np.array(peaks)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.robustness", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("models/kws12.onnx"))
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent / "data")
    ap.add_argument("--split", default="test", choices=("dev", "test"))
    ap.add_argument("--per-engine", type=int, default=100, help="keyword sentences per engine")
    ap.add_argument("--snr", default="clean,20,12,5", help="conditions: 'clean' or a SNR in dB, comma-separated")
    args = ap.parse_args(argv)
    paths = sorted((args.data / "speech").glob(f"{args.split}-*-free15-*.npz"))
    if not paths:
        ap.error(f"no {args.split} running speech under {args.data / 'speech'}: run python -m training.calibrate "
                 "--measure-only first (it builds the held-out material)")
    model = KeywordModel(args.model)
    snrs = [None if s == "clean" else float(s) for s in args.snr.split(",")]
    utts = [u for u in speech.load(paths) if u.words]
    banks = call_banks(args.data, held_out=True)
    rows = []
    for engine in tqdm(("mbrola", "kokoro", "espeak"), desc="engines", unit="engine"):
        chosen = [u for u in utts if u.speaker.startswith(engine + ":")][: args.per_engine]
        for snr, peaks in measure(model, chosen, snrs, banks).items():
            rows.append({"engine": engine, "snr_db": snr, "keywords": len(peaks),
                         **{f"peak>={t}": round(float(np.mean(peaks >= t)), 3) for t in LEVELS}})
    print("| engine | line | keywords | " + " | ".join(f"peak ≥ {t}" for t in LEVELS) + " |")
    print("|---|---|---|" + "---|" * len(LEVELS))
    for r in rows:
        line = "clean" if r["snr_db"] is None else f"{r['snr_db']:g} dB"
        print(f"| {r['engine']} | {line} | {r['keywords']} | "
              + " | ".join(f"{100 * r[f'peak>={t}']:.0f} %" for t in LEVELS) + " |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
