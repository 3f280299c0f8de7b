"""A cheap keyword-or-not gate in front of the full model (issue #10): `python -m training.gate`.

The full model costs about 0.33 ms of CPU per window, ten windows per second of every call: two thirds of
the live service's CPU. Most windows of a call hold no keyword, and the full model's keyword posteriors
there end far below its thresholds. The gate is a network an order of magnitude cheaper that scores every
window; the full model scores only the windows where the gate's score reaches the gate threshold, and the
others count as `_unknown_` (triage.model.KeywordModel.predict).

  (`--from-network` takes a keyword network instead, its keyword probability mass as the score: a network
  distilled from the full model, training/distill.py, is one.)
  1. targets: how sure the full model is of its likeliest keyword on the cached training windows of
     `python -m training`, 0 up to a posterior of 0.5 and 1 from 0.95 (distillation: the gate learns where
     the full model may fire; the full model's keyword probability mass as the target passed 68 % of the
     test windows at the threshold that lost nothing, against 62 % for this one)
  2. a small depthwise-separable CNN (log-mel pooled 2x2 first) trained on them with binary cross-entropy;
     with `--step` a streamable one, whose step model (training/streaming.py) the live spotter runs on every
     hop of a call, each window's score computed once per hop instead of once per window
  3. the threshold, chosen on the dev material (voices neither network trained on): the highest one below
     the first at which the gated model would lose more than `--max-loss` of the full model's dev detections
     or add a false alarm, under the manifest's window skipping; the test material then gives the figures,
     the shares of windows the gate and the full model score among them
  4. written as kws12_gate.onnx beside the model, named with its threshold in the model's manifest
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training import batches, dataset, export, models
from training.calibrate import Stream, as_unknown, material, scored_windows, skipping
from triage.audio import read_wav_16k
from triage.model import KeywordModel, ModelError, manifest_path_for
from triage.replay import load_labels
from triage.spotter import call_windows

ROOT = Path(__file__).resolve().parent.parent
TAUS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
THRESHOLD_RULE = "; threshold:"  # what a manifest's gate method says after what the gate is


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def training_windows(stages: Path, per_keyword: int, speech_train: int, speech_passes: int) -> tuple[np.ndarray,
                                                                                                       np.ndarray]:
    """The isolated-word and running-speech windows `python -m training` cached (float16 log-mel, labels)."""
    paths = [stages / f"kws_train_v{dataset.VERSION}_{per_keyword}.npz",
             stages / dataset.speech_cache_name("train", speech_train, speech_passes)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"training windows not found: {', '.join(missing)} (run `python -m training` first)")
    xs, ys = [], []
    for p in paths:
        with np.load(p) as z:
            xs.append(z["x"])
            ys.append(z["y"])
    return np.concatenate(xs), np.concatenate(ys)


def targets(model: KeywordModel, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """How sure the full model is of its likeliest keyword, mapped so that the gate learns where it may
    fire: 0 up to a posterior of 0.5, rising to 1 at 0.95 (every threshold is above 0.99)."""
    kw = [model.classes.index(k) for k in model.keywords]
    top = np.concatenate([model.predict_full(x[i: i + batch].astype(np.float32))[:, kw].max(axis=1)
                          for i in tqdm(range(0, len(x), batch), desc="full-model targets", unit="batch")])
    return np.clip((top - 0.5) / 0.45, 0, 1).astype(np.float32)


# A gate computed one hop at a time (`--step`): no time stride after the first convolution's, so that a hop of
# 10 frames is 5 new positions, and the mel axis halved once; 49–57 µs per call and hop at width 48 in
# onnxruntime against 355–437 for the windowed gate (BENCHMARKS.md, session 29).
STEP_BLOCKS = "1x1,1x2,1x1,1x1"


def train(x: np.ndarray, target: np.ndarray, width: int, epochs: int, seed: int = 0, step: bool = False):
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    norm = x[rng.choice(len(x), size=min(len(x), 4000), replace=False)].astype(np.float32)
    if step:
        gate = models.ds_cnn(x.shape[1:], 1, norm, width=width, blocks=STEP_BLOCKS, conv0_kernel=(8, 4),
                             streamable=True)
    else:
        gate = models.ds_cnn(x.shape[1:], 1, norm, width=width, blocks="1x1,2x1,1x1", input_pool=(2, 2),
                             conv0_kernel=(5, 3))
    batch = 128
    lr = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=epochs * (len(x) // batch + 1), alpha=0.02)
    gate.compile(optimizer=keras.optimizers.Adam(lr), loss="binary_crossentropy")
    log(f"training the gate: {len(x)} windows, {epochs} epochs, {gate.count_params()} parameters")
    batches.fit(gate, x, target, batch, seed=seed, epochs=epochs)
    return gate


def from_network(network: Path, model: KeywordModel, out: Path) -> None:
    """A keyword network (the classes' probabilities, keywords first) as a gate: the same graph with its
    output summed over the keyword classes, each window's keyword probability mass. A network distilled
    from the full model (training/distill.py) says nearly what the full model says, at a third of its cost.
    Its manifest must name the model's classes in the model's order, keywords first: the sum is by position."""
    import onnx
    from onnx import TensorProto, helper

    classes = KeywordModel(network).classes
    keywords = len(model.keywords)
    if classes != model.classes or set(classes[:keywords]) != set(model.keywords):
        raise ValueError(f"{network}: its classes {list(classes)} are not {model.path.name}'s {list(model.classes)} "
                         "with the keywords first, in that order")
    m = onnx.load(str(network))
    probs = m.graph.output[0].name
    m.graph.initializer.extend([onnx.numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
                                (("gate_start", [0]), ("gate_end", [keywords]), ("gate_axes", [1]))])
    m.graph.node.extend([helper.make_node("Slice", [probs, "gate_start", "gate_end", "gate_axes"], ["gate_kw"]),
                         helper.make_node("ReduceSum", ["gate_kw", "gate_axes"], ["gate_score"], keepdims=1)])
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info("gate_score", TensorProto.FLOAT, [None, 1]))
    onnx.checker.check_model(m)
    onnx.save(m, str(out))


def trained_gate_origin(gate: Path) -> str:
    """What a trained gate is, as the manifest that shipped it beside it says (its method before the threshold
    rule), so that measuring it again for another model keeps its provenance."""
    sha = hashlib.sha256(gate.read_bytes()).hexdigest()
    for path in sorted(gate.parent.glob("*.json")):
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        shipped = manifest.get("gate") if isinstance(manifest, dict) else None
        if isinstance(shipped, dict) and shipped.get("sha256") == sha and isinstance(shipped.get("method"), str):
            return shipped["method"].split(THRESHOLD_RULE)[0]
    return f"the gate network {gate.name} (sha256 {sha[:12]})"


def scored_streams(model: KeywordModel, calls_dir: Path, negatives) -> tuple[list[Stream], list[np.ndarray]]:
    """Every window of the material scored by the full model (posteriors) and by the gate (scores)."""
    labels = load_labels(calls_dir / "labels.jsonl")
    items = [(f, read_wav_16k(calls_dir / f), lbl) for f, lbl in labels.items()]
    items += [(name, x, None) for name, x in negatives]
    streams, gate_scores = [], []
    rate = model.features.sample_rate
    for name, samples, lbl in tqdm(items, desc=f"scoring {calls_dir.name}", unit="stream"):
        times, windows = call_windows(model, samples)
        streams.append(Stream(name, len(samples) / rate, times, model.predict_full(windows), lbl))
        gate_scores.append(model.gate.scores(windows) if len(windows) else np.zeros(0, np.float32))
    return streams, gate_scores


def gated(model: KeywordModel, streams: list[Stream], gate_scores: list[np.ndarray], tau: float) -> dict:
    """Detections, false alarms and the shares of windows the gate and the full model score with the gate at
    `tau`, under the manifest's smoothing, thresholds and window skipping (a window the gate turns away is
    `_unknown_`, which, like any window without a likely keyword, starts a skip if the gate was sure enough:
    `skip_gate_below`)."""
    st = model.streaming
    out, full, total = [], 0, 0
    for s, g in zip(streams, gate_scores, strict=True):
        keep = g >= tau
        out.append(dataclasses.replace(s, posts=as_unknown(model, s.posts, keep), gate=g))
        scored = scored_windows(model, out[-1], st.skip_below, st.skip_windows, st.skip_gate_below, tau)
        full, total = full + int((scored & keep).sum()), total + len(keep)
    r = skipping(model, out, st.skip_below, st.skip_windows, st.skip_gate_below, tau)
    return {"tau": tau, "windows_scored_by_gate": r["windows_scored"],
            "windows_scored_by_full_model": round(full / max(total, 1), 4), "detections": r["detections"],
            "false_alarms": r["false_alarms"], "latency_p95_s": r["latency_p95_s"]}


def replace_gate(manifest: dict, gate: dict, sha256: str) -> None:
    """Put `gate` (its file's digest `sha256`) in the manifest. The window skipping's `skip_gate_below` was
    chosen for the gate there before: a gate with other weights scores on another scale, so every rejection
    starts a skip again until `python -m training.calibrate` chooses it for the new one. The same gate measured
    again keeps it."""
    same = manifest.get("gate", {}).get("sha256") == sha256
    manifest["gate"] = gate
    streaming = manifest.get("streaming", {})
    if not same and streaming.get("skip_gate_below", 1.0) < 1.0:
        log(f"streaming.skip_gate_below {streaming['skip_gate_below']} reset to 1 (every rejection starts a skip): "
            "it was chosen for the gate this one replaces; `python -m training.calibrate` chooses it again")
        streaming["skip_gate_below"] = 1.0


def choose_tau(model: KeywordModel, dev: list[Stream], dev_gate: list[np.ndarray], max_loss: float) -> tuple[float,
                                                                                                          list]:
    ungated = gated(model, dev, [np.ones(len(s.times), np.float32) for s in dev], 0.0)
    rows = [gated(model, dev, dev_gate, t) for t in TAUS]
    for r in rows:
        log(f"dev τ {r['tau']}: {r}")
    # The highest τ below the first that fails: a gate loses more as τ rises, and a higher τ that passes
    # again after one that failed is the dev sample's noise (a distilled gate lost 4 of 539 dev detections
    # at 0.5 and 5 at 0.6, then 2 at 0.7, where it lost 11 of the test keywords).
    ok = []
    for r in rows:
        if r["detections"] < ungated["detections"] * (1 - max_loss) or r["false_alarms"] > ungated["false_alarms"]:
            break
        ok.append(r)
    if not ok:
        raise SystemExit(f"no gate threshold keeps {1 - max_loss:.1%} of the dev detections: {rows}")
    return ok[-1]["tau"], [ungated, *rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.gate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "kws12.onnx", help="the calibrated full model")
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--gate", type=Path, default=None, help="measure this trained gate instead of training one")
    ap.add_argument("--from-network", type=Path, default=None,
                    help="use this keyword network's keyword probability mass as the gate (e.g. a distilled model)")
    ap.add_argument("--width", type=int, default=32, help="the gate's channels")
    ap.add_argument("--step", action="store_true",
                    help="train a streamable gate and ship its step model too: the live spotter then computes it "
                         "one hop at a time")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--max-loss", type=float, default=0.005,
                    help="share of the full model's dev detections the gate may lose")
    ap.add_argument("--per-keyword", type=int, default=1000, help="as given to `python -m training`")
    ap.add_argument("--speech-train", type=int, default=8000, help="as given to `python -m training`")
    ap.add_argument("--speech-passes", type=int, default=2, help="as given to `python -m training`")
    args = ap.parse_args(argv)
    if args.step and (args.gate or args.from_network):
        ap.error("--step trains a gate: it cannot go with --gate or --from-network")
    t0 = time.time()

    model = KeywordModel(args.model)
    gate_path = args.model.with_name(args.model.stem + "_gate.onnx")
    method = (f"a width-{args.width} depthwise-separable CNN "
              + (f"(streamable, blocks {STEP_BLOCKS}, served one hop at a time)" if args.step
                 else "on 2x2-pooled log-mel")
              + ", distilled from how sure this model is of its likeliest keyword on its training windows")
    step = None
    if args.gate:
        method = trained_gate_origin(args.gate)
        if args.gate.resolve() != gate_path.resolve():
            shutil.copy2(args.gate, gate_path)
    elif args.from_network:
        try:
            from_network(args.from_network, model, gate_path)
        except (ValueError, ModelError) as e:
            raise SystemExit(f"error: {e}") from None
        method = f"the keyword probability mass of {args.from_network.name} (sha256 " \
                 f"{hashlib.sha256(args.from_network.read_bytes()).hexdigest()[:12]})"
    else:
        x, _ = training_windows(args.data / "stages", args.per_keyword, args.speech_train, args.speech_passes)
        target = targets(model, x)
        log(f"{len(x)} training windows, mean target {target.mean():.3f}, {np.mean(target == 1):.3f} at 1")
        gate = train(x, target, args.width, args.epochs, step=args.step)
        export.to_onnx(gate, model.features, gate_path)
        if args.step:
            step = export.to_onnx_step(gate, model.features, gate_path, model.hop_frames,
                                       lead=model.lead_frames)

    mpath = manifest_path_for(args.model)
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    replace_gate(manifest, {"file": gate_path.name, "threshold": 0.0, **({"step": step} if step else {})},
                 hashlib.sha256(gate_path.read_bytes()).hexdigest())
    export.save_manifest(mpath, manifest)
    model = KeywordModel(args.model)

    dev, dev_gate = scored_streams(model, *material(args.data, "dev"))
    tau, dev_rows = choose_tau(model, dev, dev_gate, args.max_loss)
    test, test_gate = scored_streams(model, *material(args.data, "test"))
    test_rows = [gated(model, test, [np.ones(len(s.times), np.float32) for s in test], 0.0)] + [
        gated(model, test, test_gate, t) for t in TAUS]
    for r in test_rows:
        log(f"test τ {r['tau']}: {r}")
    manifest["gate"] = {
        "file": gate_path.name, "threshold": tau,
        "sha256": hashlib.sha256(gate_path.read_bytes()).hexdigest(), **({"step": step} if step else {}),
        "method": f"{method}{THRESHOLD_RULE} the highest below the first that loses more than "
                  f"{100 * args.max_loss:.1f} % of this model's dev detections or adds a dev false alarm",
        "dev": dev_rows, "test": test_rows, "seconds": round(time.time() - t0)}
    export.save_manifest(mpath, manifest)
    log(f"gate threshold {tau} written to {mpath} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
