"""Issue #9, item 6, measured on every window: a keyword classifier on Google's speech embedding alone.

`training.cascade` asked the embedding only where the log-mel CNN already fired (a verifier). This asks
the other question: trained on the same synthetic training voices, does a classifier that sees only the
embedding (a front end trained on a large corpus of real speech, as openWakeWord uses it) separate the
keywords from ordinary speech better on voices it never heard than the shipped CNN does? And does
averaging the two help?

Every spotter window (0.98 s after the start, then every 100 ms) gets one 96-d embedding of the 0.76 s
of audio before it; the classifier sees the last `CONTEXT` of them (1.26 s). Its training material is
the training voices' sentences made into phone-line calls as the dev and test calls are made; its
figures come from the dev and test material of `training.calibrate`, with thresholds and smoothing
chosen on dev by the same rule (`calibrate.choose`), beside the shipped model chosen the same way.

    python -m training.embedding_kws      # JSON report; about 40 min on 2 cores, embeddings cached

The embedding costs ~1.3 ms a window, 13 ms of CPU per call-second on every window: the answer says
whether a cascade that pays it only where a cheap first stage fires is worth building.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import types
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training import speech
from training.calibrate import ROOT, Stream, call_banks, choose, counts, free_streams, material, raw_streams
from training.calls import speech_calls
from training.cascade import EMB_FRAMES, MEL_HOP, RATE, SpeechEmbedding
from triage.audio import read_wav_16k
from triage.keywords import KEYWORDS
from triage.model import KeywordModel
from triage.replay import load_labels
from triage.spotter import smooth_posteriors

HOP_S = 0.1
CONTEXT = 6  # embeddings the classifier sees: the window's and the 5 before it, 100 ms apart
REJECT, IGNORE = len(KEYWORDS), -1
CLASSES = (*KEYWORDS, "_reject_")
# A window is the keyword from 0.1 s before the word ends to 0.4 s after it; from the word's start to
# 0.6 s after its end it is otherwise neither (partly heard, or a firing there would still count as a hit).
KEYWORD_AFTER_END, IGNORE_AFTER_END = (-0.1, 0.4), 0.6


def window_target(label, t: float) -> int:
    for w in (label.keywords if label else ()):
        if w.end + KEYWORD_AFTER_END[0] <= t <= w.end + KEYWORD_AFTER_END[1]:
            return KEYWORDS.index(w.keyword)
    for w in (label.keywords if label else ()):
        if w.start - 0.05 <= t <= w.end + IGNORE_AFTER_END:
            return IGNORE
    return REJECT


def grid(duration: float, window_s: float) -> np.ndarray:
    return np.round(np.arange(window_s, duration + 1e-9, HOP_S), 3)


class _Embedder:
    """openWakeWord's mel + embedding ONNX pair on one whole stream: the mel once, then one embedding per
    requested window end."""

    def __init__(self):
        self.speech = SpeechEmbedding()

    def __call__(self, audio: np.ndarray, times: np.ndarray) -> np.ndarray:
        if not len(times):
            return np.zeros((0, 96), np.float16)
        pad = EMB_FRAMES * MEL_HOP + 4 * MEL_HOP
        m = self.speech.mel_frames(np.concatenate([np.zeros(pad, np.float32), audio.astype(np.float32)])[None])[0]
        ends = np.clip(((times * RATE + pad) / MEL_HOP).round().astype(int) - 3, EMB_FRAMES, len(m))
        w = np.stack([m[e - EMB_FRAMES: e] for e in ends])
        return np.concatenate([self.speech.embed(w[i: i + 256]) for i in range(0, len(w), 256)]).astype(np.float16)


_worker: _Embedder | None = None


def _embed_one(job) -> np.ndarray:
    global _worker
    if _worker is None:
        _worker = _Embedder()
    audio, times = job
    return _worker(audio, times)


def embed_all(jobs, workers: int, desc: str) -> list[np.ndarray]:
    with mp.get_context("spawn").Pool(workers) as pool:
        return list(tqdm(pool.imap(_embed_one, jobs, chunksize=4), total=len(jobs), desc=desc, unit="stream"))


def contexts(emb: np.ndarray) -> np.ndarray:
    """(windows, 96) → (windows, CONTEXT, 96): each window with the ones before it (the first repeated)."""
    idx = np.maximum(np.arange(len(emb))[:, None] - np.arange(CONTEXT)[::-1][None], 0)
    return emb[idx]


def cached(path: Path, names: list[str], audio: list[np.ndarray], make):
    """Embeddings kept for the same named audio: rebuilt material reuses its names, so its samples count too."""
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(x, np.float32).tobytes() for x in audio)).hexdigest()
    if path.exists():
        z = np.load(path)
        if list(z["names"]) == names and str(z.get("digest", "")) == digest:
            return np.split(z["emb"], z["offsets"][1:-1])
    out = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, names=np.array(names), digest=np.array(digest), emb=np.concatenate(out),
             offsets=np.cumsum([0] + [len(e) for e in out]))
    return out


def classifier(x: np.ndarray, y: np.ndarray, seed: int = 0, epochs: int = 12):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((CONTEXT, 96))
    h = keras.layers.LayerNormalization()(keras.layers.Flatten()(inp))
    h = keras.layers.Dropout(0.3)(keras.layers.Dense(256, activation="relu")(h))
    h = keras.layers.Dropout(0.3)(keras.layers.Dense(128, activation="relu")(h))
    model = keras.Model(inp, keras.layers.Dense(len(CLASSES), activation="softmax")(h))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    counts_ = np.maximum(np.bincount(y, minlength=len(CLASSES)), 1)
    weight = (len(y) / len(CLASSES) / counts_)[y]
    weight[y == REJECT] *= 3  # a false alarm costs more than a miss
    model.fit(x, y, sample_weight=weight, epochs=epochs, batch_size=512, verbose=2)
    return model


def scored(streams: list[Stream], posts: list[np.ndarray]) -> list[Stream]:
    return [Stream(s.name, s.duration, s.times, p, s.label) for s, p in zip(streams, posts, strict=True)]


def test_figures(model, test: list[Stream], k: int, thresholds: dict[str, float]) -> dict:
    hits = total = fa_calls = fa_free = 0
    lat: list[float] = []
    smooth = [smooth_posteriors(s.posts, k) for s in test]
    calls = [i for i, s in enumerate(test) if s.label is not None]
    free = [i for i, s in enumerate(test) if s.label is None]
    for kw, thr in thresholds.items():
        i = model.classes.index(kw)
        for sel in (calls, free):
            h, n, f, la = counts([test[j] for j in sel], [smooth[j][:, i] for j in sel], kw, thr,
                                 model.streaming.refractory_s)
            hits, total, lat = hits + h, total + n, lat + la
            if sel is calls:
                fa_calls += f
            else:
                fa_free += f
    return {"keyword_recall": round(hits / total, 4), "keywords": total,
            "false_detections_in_calls": fa_calls, "keyword_free_false_alarms": fa_free,
            "keyword_free_hours": round(sum(s.duration for s in test if s.label is None) / 3600, 2),
            "latency_p50_p95_ms": [round(float(np.percentile(lat, q)) * 1000) for q in (50, 95)] if lat else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.embedding_kws", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "kws12.onnx", help="the CNN to compare with")
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--target-fa-per-hour", type=float, default=0.5)
    ap.add_argument("--target-latency-p95", type=float, default=0.3)
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cnn = KeywordModel(args.model)
    cnn.gate = None  # every window as the network scores it: networks are compared here, not a cascade
    window_s = cnn.features.window_samples / cnn.features.sample_rate
    cache = args.data / "stages" / "embeddings"

    utts = speech.load(sorted((args.data / "speech").glob("train-8000-*.npz")))
    with_kw, free = [u for u in utts if u.words], [u for u in utts if not u.words]
    banks, train_dir = call_banks(args.data, False), args.data / "calls" / "train-embedding"
    if not (train_dir / "labels.jsonl").exists():
        speech_calls(with_kw, free[:500], banks, train_dir, seed=77)
    train_neg = free_streams(free[500:], banks, seed=78)
    labels = load_labels(train_dir / "labels.jsonl")
    train_audio = [(f, read_wav_16k(train_dir / f), lbl) for f, lbl in labels.items()]
    train_audio += [(n, x, None) for n, x in train_neg]
    train_jobs = [(x, grid(len(x) / RATE, window_s)) for _, x, _ in train_audio]
    train_emb = cached(cache / "train.npz", [n for n, _, _ in train_audio], [x for _, x, _ in train_audio],
                       lambda: embed_all(train_jobs, args.workers, "embedding training calls"))
    xs, ys = [], []
    for (_, _, lbl), (_, times), e in zip(train_audio, train_jobs, train_emb, strict=True):
        y = np.array([window_target(lbl, t) for t in times], dtype=np.int64)
        keep = y != IGNORE
        xs.append(contexts(e)[keep])
        ys.append(y[keep])
    x, y = np.concatenate(xs), np.concatenate(ys)
    print(f"{len(y)} training windows, {int((y < REJECT).sum())} of them keywords", flush=True)
    clf = classifier(x, y, epochs=args.epochs)
    del x, xs

    report: dict = {"cnn": args.model.name, "train_windows": int(len(y)), "context_s": CONTEXT * HOP_S + 0.66}
    emb_model = types.SimpleNamespace(keywords=list(KEYWORDS), classes=list(CLASSES),
                                      streaming=types.SimpleNamespace(refractory_s=cnn.streaming.refractory_s))
    streams = {}
    for split in ("dev", "test"):
        calls_dir, negatives = material(args.data, split, args.workers)
        cnn_streams = raw_streams(cnn, calls_dir, negatives)
        audio = {n: x for n, x in negatives}
        jobs = [(audio[s.name] if s.label is None else read_wav_16k(calls_dir / s.name), s.times)
                for s in cnn_streams]
        emb = cached(cache / f"{split}.npz", [s.name for s in cnn_streams], [x for x, _ in jobs],
                     lambda jobs=jobs, split=split: embed_all(jobs, args.workers, f"embedding {split}"))
        p_emb = [clf.predict(contexts(e).astype(np.float32), batch_size=2048, verbose=0) if len(e)
                 else np.zeros((0, len(CLASSES))) for e in emb]
        # the CNN's 14 classes folded to the embedding classifier's 13: keywords, then everything else
        p_cnn = [np.c_[s.posts[:, :len(KEYWORDS)], s.posts[:, len(KEYWORDS):].sum(1)] for s in cnn_streams]
        streams[split] = {"cnn": scored(cnn_streams, p_cnn), "embedding": scored(cnn_streams, p_emb),
                          "average": scored(cnn_streams, [(a + b) / 2 for a, b in zip(p_cnn, p_emb, strict=True)])}
    for name in ("cnn", "embedding", "average"):
        k, thresholds, info = choose(emb_model, streams["dev"][name], args.target_fa_per_hour,
                                     args.target_latency_p95, per_keyword=False)
        report[name] = {"smoothing": k, "dev_mean_recall": round(float(np.mean(list(info["dev_recall"].values()))), 4),
                        "dev_false_alarms": sum(info["dev_false_alarms_by_keyword"].values()),
                        "test": test_figures(emb_model, streams["test"][name], k, thresholds),
                        "thresholds": thresholds}
        print(json.dumps({name: report[name]}, indent=1), flush=True)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
