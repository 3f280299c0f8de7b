"""Reproduce the shipped models: `python -m training` (stages are cached under --data).

  1. synthesize every allowed voice (training/synth.py)
  2. augmented windows: English base set, French train set, held-out-voice evaluation set
  3. base 8-word seed CNN → models/base8.onnx
  4. transfer to 14 classes: head only, then fine-tuning of the upper layers
  5. export → models/kws12.onnx + kws12.json, evaluation, model card models/kws12.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from training import corpus, dataset, evaluate, synth
from training.voices import HELD_OUT, VOICES
from triage.features import FeatureParams
from triage.keywords import CLASSES, KEYWORDS

ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cached(path: Path, build, force: bool = False):
    if path.exists() and not force:
        with np.load(path, allow_pickle=True) as z:
            return {k: z[k] for k in z.files}
    t = time.time()
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    log(f"built {path.name} in {time.time() - t:.0f} s")
    return arrays


def fit(model, x, y, epochs: int, lr: float, desc: str, batch: int = 64) -> float:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    t = time.time()
    log(f"training {desc}: {len(x)} windows, {epochs} epochs")
    model.fit(x[..., None].astype(np.float32), y, epochs=epochs, batch_size=batch, shuffle=True, verbose=2)
    return time.time() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "data", help="cache directory (default: data/)")
    ap.add_argument("--models", type=Path, default=ROOT / "models", help="where models are written")
    ap.add_argument("--per-keyword", type=int, default=2500, help="training windows per keyword")
    ap.add_argument("--per-base-word", type=int, default=1200, help="base-model windows per English word")
    ap.add_argument("--base-epochs", type=int, default=12)
    ap.add_argument("--head-epochs", type=int, default=6)
    ap.add_argument("--finetune-epochs", type=int, default=14)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--rebuild", action="store_true", help="ignore cached datasets")
    args = ap.parse_args(argv)

    import keras

    from training import export, models

    keras.utils.set_random_seed(0)
    params = FeatureParams()
    stages = args.data / "stages"
    t0 = time.time()

    log("stage 1: synthesis")
    synth.run(args.data, workers=args.workers)

    log("stage 2: datasets")
    base_tr = cached(stages / f"base_train_{args.per_base_word}.npz", lambda: dict(zip(
        ("x", "y"), dataset.build_base(args.data, params, args.per_base_word, False, workers=args.workers)[:2],
        strict=True)), args.rebuild)
    base_ev = cached(stages / "base_eval.npz", lambda: dict(zip(
        ("x", "y"), dataset.build_base(args.data, params, 150, True, workers=args.workers)[:2], strict=True)),
        args.rebuild)
    kw_tr = cached(stages / f"kws_train_{args.per_keyword}.npz", lambda: dict(zip(
        ("x", "y"), dataset.build_train(args.data, params, args.per_keyword, workers=args.workers), strict=True)),
        args.rebuild)

    def build_eval():
        ev = dataset.build_eval(args.data, params, workers=args.workers)
        return {**{f"x_{c}": v for c, v in ev.x.items()}, "y": ev.y, "voice": np.array(ev.voice),
                "near_miss": ev.near_miss}
    ev_arrays = cached(stages / "kws_eval.npz", build_eval, args.rebuild)
    ev = dataset.EvalSet(x={c: ev_arrays[f"x_{c}"] for c in dataset.CONDITIONS}, y=ev_arrays["y"],
                         voice=list(ev_arrays["voice"]), near_miss=ev_arrays["near_miss"])

    log("stage 3: base 8-word model (seed recipe)")
    base = models.seed_cnn((params.window_frames, params.n_mels), len(corpus.BASE_WORDS),
                           norm_data=base_tr["x"][:4000])
    t_base = fit(base, base_tr["x"], base_tr["y"], args.base_epochs, 1e-3, "base8")
    base_acc = float((base.predict(base_ev["x"][..., None].astype(np.float32), verbose=0).argmax(1)
                      == base_ev["y"]).mean())
    log(f"base8 held-out-voice accuracy (augmented, phone share 65%): {base_acc:.3f}")
    export.to_onnx(base, params, args.models / "base8.onnx")
    export.write_manifest(
        args.models / "base8.onnx", name="base8", classes=list(corpus.BASE_WORDS), params=params,
        streaming=None, thresholds=None,
        metrics={"held_out_voice_accuracy": base_acc, "train_seconds": round(t_base)},
        provenance=_provenance("en"))

    log("stage 4: transfer to 14 classes")
    kws, body = models.transfer(base, len(CLASSES))
    t_head = fit(kws, kw_tr["x"], kw_tr["y"], args.head_epochs, 1e-3, "head only (body frozen)")
    head_report = evaluate.evaluate(lambda x: kws.predict(x[..., None], verbose=0, batch_size=512), ev)
    _log_report("head only", head_report)
    models.unfreeze_upper(body)
    t_ft = fit(kws, kw_tr["x"], kw_tr["y"], args.finetune_epochs, 3e-4, "fine-tune conv2 + dense + head")
    ft_report = evaluate.evaluate(lambda x: kws.predict(x[..., None], verbose=0, batch_size=512), ev)
    _log_report("fine-tuned", ft_report)

    log("stage 5: export and model card")
    onnx_path = args.models / "kws12.onnx"
    export.to_onnx(kws, params, onnx_path)
    delta = export.keras_onnx_max_delta(kws, onnx_path, ev.x["phone"][:256].astype(np.float32))
    metrics = {
        "held_out_voices": sorted(v for v in HELD_OUT if not v.startswith(("mbrola:us", "espeak:en", "flite",
                                                                            "kokoro-en"))),
        "head_only": _summary(head_report), "fine_tuned": _summary(ft_report),
        "base8_held_out_accuracy": base_acc, "keras_onnx_max_abs_delta": delta,
        "train_windows": int(len(kw_tr["y"])), "eval_windows_per_condition": int(len(ev.y)),
        "train_seconds": {"base8": round(t_base), "head": round(t_head), "finetune": round(t_ft)},
        "pipeline_seconds": round(time.time() - t0),
    }
    export.write_manifest(onnx_path, name="kws12", classes=list(CLASSES), params=params,
                          streaming=export.DEFAULT_STREAMING,
                          thresholds={k: 0.5 for k in KEYWORDS}, metrics=metrics, provenance=_provenance("fr"))
    (args.models / "kws12_eval.json").write_text(json.dumps(
        {"head_only": head_report, "fine_tuned": ft_report}, indent=1, ensure_ascii=False))
    evaluate.plot_confusions(ft_report, args.models / "kws12_confusion.png",
                             "kws12 (fine-tuned) on held-out synthetic voices")
    log(f"done in {time.time() - t0:.0f} s; Keras vs ONNX max |Δ| = {delta:.2e}")
    return 0


def _provenance(lang: str) -> dict:
    used = [v.id for v in VOICES if v.lang == lang and v.id not in HELD_OUT]
    return {
        "synthetic": "every keyword example is synthesized speech (MBROLA, espeak-ng, Kokoro fed French IPA); "
                     "no human recording of a keyword was used",
        "training_voices": used,
        "held_out_voices": sorted(v for v in HELD_OUT if any(x.id == v and x.lang == lang for x in VOICES)),
        "real_recordings": "Debian asterisk-prompt-fr-armelle and ktuberling-data (French speech, no keyword), "
                           "asterisk-moh-opsound-wav and sound-theme-freedesktop (noise); 75/25 split by file",
        "augmentation": "audiomentations pitch/time-stretch/colour noise/EQ, pyroomacoustics rooms, babble, "
                        "music, 0-20 dB SNR, gain, telephone channel (300-3400 Hz, 8 kHz, G.711) on 65%",
        "licence_note": "MBROLA voices are non-free: their output is used as training data only",
    }


def _summary(report: dict) -> dict:
    return {c: {k: r[k] for k in ("accuracy", "keyword_accuracy", "unknown_taken_for_keyword",
                                  "near_miss_taken_for_keyword", "per_voice")}
            for c, r in report["conditions"].items()}


def _log_report(name: str, report: dict) -> None:
    for c, r in report["conditions"].items():
        log(f"  {name} / {c}: accuracy {r['accuracy']:.3f}, keywords {r['keyword_accuracy']:.3f}, "
            f"near-miss→keyword {r['near_miss_taken_for_keyword']:.3f}; per voice "
            + ", ".join(f"{v} {a:.2f}" for v, a in r["per_voice"].items()))


if __name__ == "__main__":
    sys.exit(main())
