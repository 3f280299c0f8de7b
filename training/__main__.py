"""Reproduce the shipped models: `python -m training` (stages are cached under --data).

  1. synthesize every allowed voice saying words (training/synth.py) and running speech with keyword
     times from speakers drawn per utterance (training/speech.py); the dev and test splits are made by
     training/calibrate.py, which alone uses them
  2. augmented windows: English base set, French isolated-word set, French running-speech set cut on
     the spotter's grid (training/windows.py), held-out-voice clip evaluation set
  3. base 8-word models: the depthwise-separable CNN (shipped) and, with --archs, the seed CNN
  4. transfer of each to 14 classes: head only, then fine-tuning
  5. export → models/base8.onnx and models/kws12.onnx + kws12.json, evaluation
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from training import batches, corpus, dataset, evaluate, models, specaugment, speech, synth, windows
from training.voices import HELD_OUT, VOICES
from triage.features import FeatureParams
from triage.keywords import CLASSES, KEYWORDS, UNKNOWN

ROOT = Path(__file__).resolve().parent.parent
# A streamable DS-CNN: no time padding, and a receptive field (64 frames) that is a multiple of the time
# stride (8 frames), so that it is computed one 80 ms hop at a time (training/streaming.py).
STREAMABLE = {"streamable": True, "conv0_kernel": (8, 4)}
STEP_HOP_FRAMES = 8


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


def fit(model, x, y, epochs: int, lr: float, desc: str, batch: int = 64, schedule: bool = False,
        augment: tuple[specaugment.SpecAugment, FeatureParams] | None = None) -> float:
    """Train `model` on windows x; with `augment`, each batch of each epoch is augmented afresh."""
    import keras

    if schedule:  # cosine decay over the run, for training every layer from a warm start
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=epochs * (len(x) // batch + 1), alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    t = time.time()
    log(f"training {desc}: {len(x)} windows, {epochs} epochs" + (", SpecAugment" if augment else ""))
    transform = (lambda xb, rng: augment[0](xb, rng, augment[1])) if augment else None
    batches.fit(model, x, y, batch, seed=len(x), epochs=epochs, transform=transform)
    return time.time() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "data", help="cache directory (default: data/)")
    ap.add_argument("--models", type=Path, default=ROOT / "models", help="where models are written")
    ap.add_argument("--stages", type=Path, default=None, help="cache of datasets and trained models "
                                                               "(default: DATA/stages)")
    ap.add_argument("--per-keyword", type=int, default=1000, help="isolated-word training windows per keyword")
    ap.add_argument("--speech-train", type=int, default=8000, help="running-speech training utterances")
    ap.add_argument("--speech-passes", type=int, default=2, help="augmented copies of the running speech")
    ap.add_argument("--archs", default="ds_cnn", help="comma-separated: ds_cnn (shipped), seed (baseline)")
    ap.add_argument("--mining-rounds", type=int, default=6,
                    help="rounds after training, each on freshly augmented speech plus its hard negatives")
    ap.add_argument("--mining-epochs", type=int, default=1, help="fine-tuning epochs per mining round")
    ap.add_argument("--extra-voices", type=_extra_kinds, default=("wide",),
                    help="the voices of --extra-rounds (speech.EXTRA_VOICES; several joined by commas, each with "
                         "--extra-speech utterances): further from French, the natural "
                         "ones only, MBROLA with other languages' speakers (training/diphones.py), or the training "
                         "voices saying keywords in other contexts than the templates' (corpus.KEYWORD_CONTEXTS), "
                         "or more template sentences of the training voices (the control of the contexts)")
    ap.add_argument("--extra-speech", type=int, default=2000,
                    help="running-speech utterances planned of each kind of extra voices (Kokoro capped: "
                         "speech.EXTRA_VOICES)")
    ap.add_argument("--extra-rounds", type=int, default=0,
                    help="mining rounds after the others, on the training speech plus the extra voices (measured: "
                         "training/README.md)")
    ap.add_argument("--extra-from-start", action="store_true",
                    help="the extra voices' speech joins the training speech from the transfer on, every mining "
                         "round included (a network of its own, cached apart from the one trained without it)")
    ap.add_argument("--per-base-word", type=int, default=1200, help="base-model windows per English word")
    ap.add_argument("--base-epochs", type=int, default=12)
    ap.add_argument("--head-epochs", type=int, default=2)
    ap.add_argument("--finetune-epochs", type=int, default=14, help="seed recipe fine-tuning epochs")
    ap.add_argument("--ds-epochs", type=int, default=6, help="DS-CNN fine-tuning epochs (all layers)")
    ap.add_argument("--width", type=int, default=96, help="DS-CNN channels")
    ap.add_argument("--ds-blocks", default=models.DS_BLOCKS, help="DS-CNN block strides, time x mel")
    ap.add_argument("--pool", choices=("avg", "max"), default="avg",
                    help="the DS-CNN's last pooling: avg over time and mel (shipped), or max over time of the mel "
                         "average (training/models.py)")
    ap.add_argument("--frontend", choices=("logmel", "pcen"), default="logmel",
                    help="the DS-CNN's first layer: the log-mel as it is (shipped), or per-channel energy "
                         "normalization trained with the network (training/pcen.py)")
    ap.add_argument("--spec-augment", action="store_true",
                    help="augment the mining rounds' batches on the log-mel: vocal-tract warp and SpecAugment masks "
                         "(training/specaugment.py)")
    ap.add_argument("--streamable", action="store_true",
                    help="a DS-CNN served one 80 ms hop at a time: each output position computed once per call "
                         "instead of once per window (training/streaming.py)")
    ap.add_argument("--retrain", action="store_true", help="ignore cached trained models")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--rebuild", action="store_true", help="ignore cached datasets")
    ap.add_argument("--head-refit", action=argparse.BooleanOptionalAction, default=True,
                    help="refit the exported model's last layer, class-balanced, on the running-speech windows "
                         "(training/headfit.py)")
    args = ap.parse_args(argv)
    if args.frontend == "pcen" and args.streamable:
        ap.error("--frontend pcen cannot be --streamable: its smoother starts from each window's mean level")

    import keras

    from training import export

    keras.utils.set_random_seed(0)
    params = FeatureParams()
    stages = args.stages or args.data / "stages"
    t0 = time.time()

    log("stage 1: synthesis")
    synth.run(args.data, workers=args.workers)
    speech_paths = {"train": speech.build(args.data, "train", args.speech_train, kokoro_share=0.15, kokoro_cap=500,
                                          workers=args.workers)}
    with_extra = bool(args.extra_rounds or args.extra_from_start)
    for kind in args.extra_voices if with_extra else ():
        kokoro_share, kokoro_cap = speech.EXTRA_VOICES[kind]
        speech_paths[kind] = speech.build(
            args.data, "train", args.extra_speech, seed=1, kokoro_share=kokoro_share, kokoro_cap=kokoro_cap,
            workers=args.workers, extra=kind)

    stage_seconds = {"synthesis": round(time.time() - t0)}
    log("stage 2: datasets")
    base_tr = cached(stages / f"base_train_{args.per_base_word}.npz", lambda: dict(zip(
        ("x", "y"), dataset.build_base(args.data, params, args.per_base_word, False, workers=args.workers)[:2],
        strict=True)), args.rebuild)
    base_ev = cached(stages / "base_eval.npz", lambda: dict(zip(
        ("x", "y"), dataset.build_base(args.data, params, 150, True, workers=args.workers)[:2], strict=True)),
        args.rebuild)
    words_tr = cached(stages / f"kws_train_v{dataset.VERSION}_{args.per_keyword}.npz", lambda: dict(zip(
        ("x", "y"), dataset.build_train(args.data, params, args.per_keyword, workers=args.workers), strict=True)),
        args.rebuild)
    def speech_windows(split: str, count: int, seed: int) -> dict:
        """Spotter-grid windows of a running-speech set (cached)."""
        return cached(stages / dataset.speech_cache_name(split, count, args.speech_passes), lambda: dict(zip(
            ("x", "y"), windows.build(speech.load(speech_paths[split]),
                                      dataset.load_pools(args.data, "fr", held_out=False).banks, params, seed=seed,
                                      passes=args.speech_passes, workers=args.workers), strict=True)), args.rebuild)

    speech_tr = speech_windows("train", args.speech_train, seed=0)
    extra_tr = None
    if with_extra:
        kinds = [speech_windows(kind, args.extra_speech, seed=1) for kind in args.extra_voices]
        extra_tr = {k: np.concatenate([w[k] for w in kinds]) for k in ("x", "y")}
        del kinds
    if args.extra_from_start:  # then part of the training speech itself, not extra to it
        speech_tr, extra_tr = {k: np.concatenate([speech_tr[k], extra_tr[k]]) for k in ("x", "y")}, None
    kw_tr = {k: np.concatenate([words_tr[k], speech_tr[k]]) for k in ("x", "y")}
    log("training windows: " + ", ".join(f"{c} {n}" for c, n in zip(CLASSES, np.bincount(kw_tr["y"],
                                                                      minlength=len(CLASSES)), strict=True)))

    def build_eval():
        ev = dataset.build_eval(args.data, params, workers=args.workers)
        return {**{f"x_{c}": v for c, v in ev.x.items()}, "y": ev.y, "voice": np.array(ev.voice),
                "near_miss": ev.near_miss}
    ev_arrays = cached(stages / f"kws_eval_v{dataset.VERSION}.npz", build_eval, args.rebuild)
    ev = dataset.EvalSet.from_arrays(ev_arrays)

    stage_seconds["windows"] = round(time.time() - t0 - stage_seconds["synthesis"])
    shape = (params.window_frames, params.n_mels)
    results = {}
    for arch in args.archs.split(","):
        results[arch] = train_arch(arch, args, shape, base_tr, base_ev, kw_tr, ev, stages / _cache_name(arch, args))

    ds = results["ds_cnn"]
    french = _french_cache(stages / _cache_name("ds_cnn", args), args)
    if args.mining_rounds or args.extra_rounds:
        train_utts = speech.load(speech_paths["train"])
        extra_utts = [u for kind in args.extra_voices for u in speech.load(speech_paths[kind])] if with_extra else []
        if args.extra_from_start:
            train_utts, extra_utts = train_utts + extra_utts, []
        banks = dataset.load_pools(args.data, "fr", held_out=False).banks
    if args.mining_rounds:
        for rnd in range(1, args.mining_rounds + 1):
            ds = mine_round(ds, rnd, args, words_tr, ev, train_utts, banks, params, french)
    if args.extra_rounds:
        for rnd in range(args.mining_rounds + 1, args.mining_rounds + args.extra_rounds + 1):
            ds = mine_round(ds, rnd, args, words_tr, ev, train_utts + extra_utts, banks, params,
                            french, tag=f"-{_extra_name(args)}")
    stage_seconds["training"] = round(time.time() - t0) - sum(stage_seconds.values())

    log("stage 5: export and model card")
    base_path = args.models / "base8.onnx"
    export.to_onnx(ds["base"], params, base_path)
    export.write_manifest(
        base_path, name="base8", classes=list(corpus.BASE_WORDS), params=params, streaming=None,
        thresholds=None, metrics={"held_out_voice_accuracy": ds["base_acc"], "recipe": "DS-CNN base"},
        provenance=_provenance("en"))
    onnx_path = args.models / "kws12.onnx"
    export.to_onnx(ds["kws"], params, onnx_path)
    delta = export.keras_onnx_max_delta(ds["kws"], onnx_path, ev.x["phone"][:256].astype(np.float32))
    step = export.to_onnx_step(ds["kws"], params, onnx_path, STEP_HOP_FRAMES) if args.streamable else None
    refit = None
    if args.head_refit:
        from training import headfit

        log("stage 5b: the last layer refitted, class-balanced, on the running-speech windows")
        refit = headfit.refit(onnx_path, speech_tr if extra_tr is None else {
            k: np.concatenate([speech_tr[k], extra_tr[k]]) for k in ("x", "y")}, step=step)
        step = refit.pop("step", step)
    metrics = {
        "architecture": f"ds_cnn (depthwise-separable CNN, width {args.width}, block strides {args.ds_blocks}"
                        f"{', max over time' if args.pool == 'max' else ''}"
                        f"{', PCEN front end' if args.frontend == 'pcen' else ''}), "
                        "transferred from an 8-word English base" + (
                            "; last layer refitted class-balanced on the running-speech windows" if refit else "")
                        + ("; mining rounds warped and masked afresh per batch" if args.spec_augment else "")
                        + (f"; trained with {args.extra_speech} utterances of each of the "
                           f"{', '.join(args.extra_voices)} extra voices in its running speech"
                           if args.extra_from_start else ""),
        "held_out_voices": _provenance("fr")["held_out_voices"],
        "shipped": {"head_only": evaluate.summary(ds["head"]), "fine_tuned": evaluate.summary(ds["ft"]),
                    "base8_held_out_accuracy": ds["base_acc"], "train_seconds": ds["seconds"]},
        **({"seed_baseline": {"head_only": evaluate.summary(r["head"]), "fine_tuned": evaluate.summary(r["ft"]),
                              "base8_held_out_accuracy": r["base_acc"], "train_seconds": r["seconds"]}}
           if (r := results.get("seed")) else {}),
        "keras_onnx_max_abs_delta": delta,  # before the head refit, which only the ONNX model has
        **({"head_refit": refit} if refit else {}),
        "stage_seconds": stage_seconds,
        "hard_negative_mining": ds.get("mining", []),
        "train_windows": int(len(kw_tr["y"])), "eval_windows_per_condition": int(len(ev.y)),
    }
    export.write_manifest(onnx_path, name="kws12", classes=list(CLASSES), params=params,
                          streaming={**export.DEFAULT_STREAMING, **(
                              {"hop_s": STEP_HOP_FRAMES * params.hop_length / params.sample_rate} if step else {})},
                          thresholds={k: 0.5 for k in KEYWORDS}, metrics=metrics, provenance=_provenance("fr"),
                          step=step)
    (args.models / "kws12_eval.json").write_text(json.dumps(
        {a: {"head_only": r["head"], "fine_tuned": r["ft"]} for a, r in results.items()}, indent=1,
        ensure_ascii=False))
    evaluate.plot_confusions(ds["ft"], args.models / "kws12_confusion.png",
                             "kws12 on held-out synthetic voices (rows: true class)")
    log(f"done in {time.time() - t0:.0f} s; Keras vs ONNX max |Δ| = {delta:.2e}")
    return 0


def train_base(arch: str, args, shape, base_tr, base_ev, cache: Path):
    """The English 8-word base model of an architecture (cached: it does not depend on the French data)."""
    done = cache / "base.json"
    if done.exists() and (cache / "base.keras").exists() and not args.retrain:
        r = json.loads(done.read_text())
        log(f"{arch}: base model found in {cache}")
        return models.load(cache / "base.keras"), r["base_acc"], r["seconds"]
    n_base = len(corpus.BASE_WORDS)
    log(f"stage 3 ({arch}): base 8-word model")
    if arch == "seed":
        base = models.seed_cnn(shape, n_base, norm_data=base_tr["x"][:4000])
    else:
        base = models.ds_cnn(shape, n_base, norm_data=base_tr["x"][:4000], width=args.width, blocks=args.ds_blocks,
                             pool=args.pool, frontend=args.frontend, **STREAMABLE if args.streamable else {})
    seconds = {"base8": round(fit(base, base_tr["x"], base_tr["y"], args.base_epochs, 1e-3, f"{arch} base8"))}
    base_acc = float((base.predict(base_ev["x"][..., None].astype(np.float32), verbose=0).argmax(1)
                      == base_ev["y"]).mean())
    log(f"{arch} base8 held-out-voice accuracy: {base_acc:.3f}")
    base.save(cache / "base.keras")
    done.write_text(json.dumps({"base_acc": base_acc, "seconds": seconds}))
    return base, base_acc, seconds


def train_arch(arch: str, args, shape, base_tr, base_ev, kw_tr, ev, cache: Path) -> dict:
    """Base 8-word model (cached in `cache`, per arch), then transfer to the 14 classes: head only, then
    fine-tuning (cached in `_french_cache`)."""
    french = _french_cache(cache, args)
    french.mkdir(parents=True, exist_ok=True)
    done = french / f"result_v{dataset.VERSION}_{len(kw_tr['y'])}.json"
    if done.exists() and not args.retrain:
        r = json.loads(done.read_text())
        log(f"{arch}: trained models found in {french}")
        return {**r, "base": models.load(cache / "base.keras"),
                "kws": models.load(french / "kws.keras")}
    base, base_acc, seconds = train_base(arch, args, shape, base_tr, base_ev, cache)

    log(f"stage 4 ({arch}): transfer to 14 classes")
    if arch == "seed":
        kws, body = models.transfer(base, len(CLASSES))
    else:
        kws, body = models.transfer_all(base, len(CLASSES))
        body.trainable = False
    seconds["head"] = round(fit(kws, kw_tr["x"], kw_tr["y"], args.head_epochs, 1e-3, f"{arch} head only"))
    head = evaluate.evaluate(lambda x: kws.predict(x[..., None], verbose=0, batch_size=512), ev)
    _log_report(f"{arch} head only", head)
    if arch == "seed":
        models.unfreeze_upper(body)  # the seed recipe: conv2 + dense + head
        seconds["finetune"] = round(fit(kws, kw_tr["x"], kw_tr["y"], args.finetune_epochs, 3e-4,
                                        "seed fine-tune conv2 + dense + head"))
    else:
        body.trainable = True
        seconds["finetune"] = round(fit(kws, kw_tr["x"], kw_tr["y"], args.ds_epochs, 2e-3,
                                        "ds_cnn fine-tune all layers", batch=128, schedule=True))
    ft = evaluate.evaluate(lambda x: kws.predict(x[..., None], verbose=0, batch_size=512), ev)
    _log_report(f"{arch} fine-tuned", ft)
    kws.save(french / "kws.keras")
    r = {"base_acc": base_acc, "head": head, "ft": ft, "seconds": seconds}
    done.write_text(json.dumps(r))
    # Transfer shares the base's layers, so `base` now holds fine-tuned weights: the base model itself
    # is the copy saved right after its own training.
    return {**r, "base": models.load(cache / "base.keras"), "kws": kws}


def mine_round(ds: dict, rnd: int, args, words_tr, ev, utts, banks, params, cache: Path, tag: str = "") -> dict:
    """One round of hard-negative mining, then one short fine-tuning on fresh augmentation (cached).

    Each round augments the training speech anew (its own seed): the model meets every keyword in a
    room, noise and line it has not seen yet, and the keyword-free windows it now takes for a keyword
    are mined from that same pass. So rounds are both fresh-augmentation epochs and mining rounds.
    """
    from training import mining

    voices = {"voices": f"training and extra ({tag.lstrip('-')}) voices"} if tag else {}
    tag += "-specaug" if args.spec_augment else ""
    # Keyed by the dataset version: a round's starting point was trained on windows labelled by its rules.
    tag += f"-v{dataset.VERSION}"
    path, info_path = cache / f"kws_fresh_mined{rnd}{tag}.keras", cache / f"fresh_mined{rnd}{tag}.json"
    if path.exists() and info_path.exists() and not args.retrain:
        log(f"mining round {rnd}: found in {cache}")
        info = json.loads(info_path.read_text())
        return {**ds, "kws": models.load(path), "ft": info.pop("ft"),
                "mining": ds.get("mining", []) + [info]}
    t = time.time()
    x, y = windows.build(utts, banks, params, seed=100 + rnd, passes=1, unknown_per_utt=10**6,
                         workers=args.workers)
    unknown = np.nonzero(y == CLASSES.index(UNKNOWN))[0]
    kws = ds["kws"]
    mined = mining.hard_negatives(lambda b: kws.predict(b[..., None], verbose=0, batch_size=512), x, rows=unknown)
    log(f"mining round {rnd}: {len(mined)} of {len(unknown)} keyword-free training windows score ≥ 0.2 on a keyword")
    rng = np.random.default_rng(rnd)
    fresh = np.concatenate([np.nonzero(y != CLASSES.index(UNKNOWN))[0],
                            rng.choice(unknown, size=min(len(unknown), 3 * len(utts)), replace=False)])
    negatives = x[mined]
    train = mining.with_negatives({"x": np.concatenate([words_tr["x"], x[fresh]]),
                                   "y": np.concatenate([words_tr["y"], y[fresh]])}, negatives)
    del x, y
    fit(kws, train["x"], train["y"], args.mining_epochs, 3e-4, f"mining round {rnd} fine-tune", batch=128,
        schedule=True, augment=(specaugment.SpecAugment(), params) if args.spec_augment else None)
    after = mining.hard_negatives(lambda b: kws.predict(b[..., None], verbose=0, batch_size=512), negatives)
    ft = evaluate.evaluate(lambda b: kws.predict(b[..., None], verbose=0, batch_size=512), ev)
    _log_report(f"after mining round {rnd}", ft)
    info = {"round": rnd, **voices,
            **({"spec_augment": True} if args.spec_augment else {}), "pool_windows": int(len(unknown)),
            "mined": int(len(mined)),
            "mined_still_above_0.2": int(len(after)), "train_windows": int(len(train["y"])),
            "seconds": round(time.time() - t)}
    kws.save(path)
    info_path.write_text(json.dumps({**info, "ft": ft}))
    return {**ds, "kws": kws, "ft": ft, "mining": ds.get("mining", []) + [info]}


def _cache_name(arch: str, args) -> str:
    if arch != "ds_cnn":
        return arch
    return (f"ds_cnn-w{args.width}-b{args.ds_blocks}{'-streamable' if args.streamable else ''}"
            f"{'-maxpool' if args.pool == 'max' else ''}{'-pcen' if args.frontend == 'pcen' else ''}")


def _french_cache(cache: Path, args) -> Path:
    """The French networks of an architecture's cache: one trained with extra voices from the start apart, beside
    the one trained without (the 8-word base stays shared in `cache`)."""
    return cache / f"with-{_extra_name(args)}" if args.extra_from_start else cache


def _extra_kinds(value: str) -> tuple[str, ...]:
    kinds = tuple(value.split(","))
    if unknown := [k for k in kinds if k not in speech.EXTRA_VOICES]:
        raise argparse.ArgumentTypeError(f"unknown extra voices {', '.join(unknown)}: choose among "
                                         f"{', '.join(speech.EXTRA_VOICES)}")
    return kinds


def _extra_name(args) -> str:
    """The extra voices in cache names: `contexts6000` for one kind (as before several were allowed),
    `contexts+templates6000` for two."""
    return "+".join(args.extra_voices) + str(args.extra_speech)


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


def _log_report(name: str, report: dict) -> None:
    for c, r in report["conditions"].items():
        log(f"  {name} / {c}: accuracy {r['accuracy']:.3f}, keywords {r['keyword_accuracy']:.3f}, "
            f"near-miss→keyword {r['near_miss_taken_for_keyword']:.3f}; per voice "
            + ", ".join(f"{v} {a:.2f}" for v, a in r["per_voice"].items()))


if __name__ == "__main__":
    sys.exit(main())
