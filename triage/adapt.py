"""`triage adapt DATASET`: the shipped keyword model fitted to a dispatch centre's own labelled calls.

DATASET is what `triage feedback export` writes (WAV calls + labels.jsonl), or any directory in that form.

A centre has few examples (from about five per keyword), so only the model's last layer is refitted:
the softmax over the embedding the convolutional body computes (96 numbers a network; an ensemble's
head reads its members' embeddings side by side, training/ensemble.py). The body was trained on
about 100 000 windows; refitting its millions of multiply-adds on fifty would learn those fifty, not the
centre's callers. The head starts from the shipped weights and is pulled back toward them (L2), so
what the centre's calls do not speak to stays as it was.

  1. split the calls into an adaptation part and a held-out part (by call, seeded);
  2. cut windows on the spotter's 100 ms grid from the adaptation calls, labelled by the rule training
     uses (triage.windowing); an approximate label (a dispatcher's "missed, at about 1:05", ±1 s) is
     placed where the shipped model's posterior for that keyword peaks in its span;
  3. refit the head, class-balanced, by full-batch Adam (numpy: no TensorFlow at a dispatch centre);
  4. per keyword, the threshold with the highest recall and no false alarm on the adaptation calls, the
     one nearest the shipped threshold when several tie;
  5. measure the shipped and the adapted model with the live core (`replay`) on the held-out calls and
     on the project's reference calls (models/reference); refuse to promote when the adapted one is
     worse on either, and say where.

Everything but reading files and writing the model is pure and deterministic for a seed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from triage.audio import read_wav_16k
from triage.keywords import KEYWORD_SERVICE, SILENCE, UNKNOWN
from triage.model import KeywordModel, manifest_path_for
from triage.replay import CallLabel, load_labels, replay_samples, score
from triage.spotter import Trigger, call_windows, smooth_posteriors
from triage.windowing import window_label

REFERENCE = Path(__file__).resolve().parents[1] / "models" / "reference"
THRESHOLD_GRID = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.96, 0.97, 0.98, 0.99, 0.994, 0.998, 0.999)
INSIDE_SLACK_S = 0.05  # a label this much longer than a window is still a timed one (label precision)


class AdaptError(RuntimeError):
    """Adaptation cannot run on this dataset; the message says what is missing."""


# --- the model's last layer ---------------------------------------------------------------------------

@dataclass
class Head:
    """Softmax(embedding @ weights + bias), and where these live in the ONNX graph."""
    weights: np.ndarray  # (embedding, classes)
    bias: np.ndarray  # (classes,)
    embedding_name: str
    weights_name: str
    bias_name: str

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        z = embeddings @ self.weights + self.bias
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def read_head(onnx_path: Path):
    """The graph (onnx ModelProto) and its final Softmax(MatMul + Add) head."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(onnx_path))
    g = proto.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}
    softmax = producer.get(g.output[0].name)
    add = producer.get(softmax.input[0]) if softmax is not None and softmax.op_type == "Softmax" else None
    if add is None or add.op_type != "Add":
        raise AdaptError(f"{onnx_path}: the output is not Softmax(MatMul + bias); only such a head can be adapted")
    matmul_in = next((x for x in add.input if x in producer and producer[x].op_type == "MatMul"), None)
    bias = next((x for x in add.input if x in inits), None)
    if matmul_in is None or bias is None:
        raise AdaptError(f"{onnx_path}: the final Add is not MatMul + a constant bias")
    mm = producer[matmul_in]
    emb, weights = (mm.input[0], mm.input[1]) if mm.input[1] in inits else (mm.input[1], mm.input[0])
    head = Head(numpy_helper.to_array(inits[weights]).astype(np.float64),
                numpy_helper.to_array(inits[bias]).astype(np.float64), emb, weights, bias)
    return proto, head


def embedder(proto, head: Head):
    """windows (N, frames, mels) → embeddings (N, D), by the model's own body in onnxruntime."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    probe.graph.output.append(onnx.helper.make_tensor_value_info(head.embedding_name, onnx.TensorProto.FLOAT,
                                                                 None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def embed(windows: np.ndarray) -> np.ndarray:
        if len(windows) == 0:
            return np.zeros((0, head.weights.shape[0]))
        x = np.asarray(windows, dtype=np.float32)[..., None]
        return np.concatenate([session.run([head.embedding_name], {name: x[i: i + 64]})[0]
                               for i in range(0, len(x), 64)]).astype(np.float64)
    return embed


def write_model(proto, head: Head, weights: np.ndarray, bias: np.ndarray, path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for init in out.graph.initializer:
        if init.name == head.weights_name:
            init.CopyFrom(numpy_helper.from_array(weights.astype(np.float32), head.weights_name))
        elif init.name == head.bias_name:
            init.CopyFrom(numpy_helper.from_array(bias.astype(np.float32), head.bias_name))
    onnx.save(out, str(path))


# --- windows from labelled calls -------------------------------------------------------------------------

@dataclass
class CallWindows:
    file: str
    times: np.ndarray  # (N,) call time each window ends at
    posteriors: np.ndarray  # (N, classes) of the shipped model, raw
    embeddings: np.ndarray  # (N, D)
    label: CallLabel


def label_windows(cw: CallWindows, classes: tuple[str, ...], window_s: float) -> np.ndarray:
    """Class index per window, -1 where the window is left out. Timed keywords are labelled by the rule
    training uses (triage.windowing); an approximate one (a span longer than a window: a dispatcher's
    "about then") is placed where the shipped model heard that keyword best in its span, and the rest of
    its span is left out. Keyword-free windows the shipped model takes for silence stay silence."""
    timed = [(k.keyword, k.start, k.end) for k in cw.label.keywords if k.end - k.start <= window_s + INSIDE_SLACK_S]
    rough = [k for k in cw.label.keywords if k.end - k.start > window_s + INSIDE_SLACK_S]
    silence = classes.index(SILENCE)
    y = np.full(len(cw.times), -1, dtype=np.int64)
    for j, t in enumerate(cw.times):
        start = t - window_s
        if any(start < k.end and t > k.start for k in rough):
            continue
        name = window_label(start, window_s, timed)
        if name == UNKNOWN and cw.posteriors[j].argmax() == silence:
            name = SILENCE
        if name is not None:
            y[j] = classes.index(name)
    starts = cw.times - window_s
    for k in rough:
        c = classes.index(k.keyword)
        span = np.nonzero((starts >= k.start - INSIDE_SLACK_S) & (cw.times <= k.end + INSIDE_SLACK_S))[0]
        if len(span):
            best = span[np.argmax(cw.posteriors[span, c])]
            y[max(0, best - 1): best + 2] = c
    return y


def fit_head(x: np.ndarray, y: np.ndarray, head: Head, l2: float = 0.05, steps: int = 400,
             lr: float = 0.01, balance: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced cross-entropy + l2 * |θ − θ_shipped|², full-batch Adam from the shipped weights.
    Each class weighs count^-balance: 1 gives every class the same total weight, 0 every window."""
    w0, b0 = head.weights, head.bias
    w, b = w0.copy(), b0.copy()
    n_classes = w.shape[1]
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    sample_w = (np.maximum(counts, 1) ** -balance)[y]
    sample_w /= sample_w.sum()
    onehot = np.eye(n_classes)[y]
    m = [np.zeros_like(w), np.zeros_like(b)]
    v = [np.zeros_like(w), np.zeros_like(b)]
    for t in range(1, steps + 1):
        z = x @ w + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) * sample_w[:, None]
        grads = [x.T @ g + 2 * l2 * (w - w0), g.sum(axis=0) + 2 * l2 * (b - b0)]
        for i, (param, grad) in enumerate(zip((w, b), grads, strict=True)):
            m[i] = 0.9 * m[i] + 0.1 * grad
            v[i] = 0.999 * v[i] + 0.001 * grad ** 2
            param -= lr * (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-8)
    return w, b


# --- thresholds ----------------------------------------------------------------------------------------

def fires(times: np.ndarray, scores: np.ndarray, threshold: float, refractory_s: float) -> list[float]:
    """When one keyword's detections fire, by the live Trigger itself."""
    trig = Trigger(threshold, refractory_s)
    return [float(t) for t, s in zip(times, scores, strict=True) if trig.step(float(t), float(s))]


def calibrate(calls: list[tuple[np.ndarray, np.ndarray, CallLabel]], classes: tuple[str, ...],
              refractory_s: float, match_after_s: float, fallback: dict[str, float]) -> dict[str, dict]:
    """Per keyword, over (times, smoothed posteriors, label) of calls: of the thresholds (the grid and the
    shipped one, `fallback`) with the highest recall and no false alarm of that keyword, the one nearest the
    shipped threshold. A handful of adaptation calls cannot tell 0.96 from 0.999 when both find every
    keyword; the shipped threshold was set against hours of keyword-free speech, so it moves only as far
    as the calls ask (taking the highest tied threshold instead lost held-out keywords). A keyword the
    calls never say keeps the shipped threshold unless that would fire falsely. When every threshold fires
    falsely, the highest, with its false alarms counted."""
    out = {}
    for kw in (c for c in classes if c in KEYWORD_SERVICE):
        i = classes.index(kw)
        tried = []
        for thr in sorted({*THRESHOLD_GRID, fallback[kw]}):
            hits = said = false = 0
            for times, post, label in calls:
                spans = [(k.start, k.end + match_after_s) for k in label.keywords if k.keyword == kw]
                said += len(spans)
                fired = fires(times, post[:, i], thr, refractory_s)
                hits += sum(any(a <= t <= b for t in fired) for a, b in spans)
                false += sum(not any(a <= t <= b for a, b in spans) for t in fired)
            tried.append((thr, hits, said, false))
        clean = [t for t in tried if t[3] == 0]
        if clean:
            most = max(t[1] for t in clean)
            thr, hits, said, false = min((t for t in clean if t[1] == most),
                                         key=lambda t: (round(abs(t[0] - fallback[kw]), 9), -t[0]))
        else:  # every threshold fires falsely: the highest, and the card says how often
            thr, hits, said, false = max(tried)
        out[kw] = {"threshold": thr, "said": said, "detected": hits, "false_alarms": false}
    return out


# --- the whole adaptation ----------------------------------------------------------------------------------

@dataclass
class Evaluation:
    shipped: dict
    adapted: dict

    def worse(self) -> list[str]:
        """What the adapted model does worse than the shipped one (empty: not worse)."""
        s, a = self.shipped, self.adapted
        reasons = []
        if a["calls"] and a["route_exact_match"] < s["route_exact_match"]:
            reasons.append(f"route exact match {a['route_exact_match']:.3f} < {s['route_exact_match']:.3f}")
        if a["keywords"] and a["keyword_recall"] < s["keyword_recall"]:
            reasons.append(f"keyword recall {a['keyword_recall']:.3f} < {s['keyword_recall']:.3f}")
        if a["false_alarms"] > s["false_alarms"]:
            reasons.append(f"false alarms {a['false_alarms']} > {s['false_alarms']}")
        return reasons


@dataclass
class Adaptation:
    model_path: Path
    manifest: dict
    card_path: Path
    held_out: Evaluation
    reference: Evaluation | None
    windows: dict[str, int]
    thresholds: dict[str, dict]
    adaptation_calls: list[str] = field(default_factory=list)
    held_out_calls: list[str] = field(default_factory=list)

    @property
    def refusals(self) -> list[str]:
        out = [f"held-out calls of the dataset: {r}" for r in self.held_out.worse()]
        if self.held_out.adapted["calls"] == 0:
            out.append("no held-out call to measure the adapted model on")
        if self.reference is not None:
            out += [f"the project's reference calls: {r}" for r in self.reference.worse()]
        return out


def split(files: list[str], held_out: float, seed: int) -> tuple[list[str], list[str]]:
    """Calls → (adaptation, held out), by a seeded hash of the file name: stable as the dataset grows."""
    def key(f: str) -> float:
        return int(hashlib.sha256(f"{seed}:{f}".encode()).hexdigest()[:12], 16) / 16 ** 12
    held = sorted(f for f in files if key(f) < held_out)
    return sorted(set(files) - set(held)), held


def measure(model: KeywordModel, directory: Path, labels: dict[str, CallLabel], files: list[str]) -> dict:
    results = [replay_samples(model, read_wav_16k(directory / f), f) for f in files]
    return score(results, labels).summary()


def adapt(dataset: Path, model: KeywordModel, out_dir: Path, held_out: float = 0.3, seed: int = 0,
          reference: Path | None = REFERENCE, l2: float = 0.05, steps: int = 400, shuffle_labels: bool = False,
          progress=lambda msg: None) -> Adaptation:
    """Fit, calibrate, export and measure; nothing is promoted here (see `promote`). `reference`: labelled
    calls the adapted model must not do worse on (None: the dataset's held-out calls only)."""
    if reference is not None and not (reference / "labels.jsonl").is_file():
        raise AdaptError(f"{reference}: no reference calls (labels.jsonl); give --reference DIR, or --no-reference "
                         "to guard with the dataset's held-out calls only")
    label_file = dataset / "labels.jsonl"
    if not label_file.is_file():
        raise AdaptError(f"{dataset}: no labels.jsonl (make one with `triage feedback export`)")
    labels = load_labels(label_file)
    files = [f for f in sorted(labels) if (dataset / f).is_file()]
    missing = sorted(set(labels) - set(files))
    if missing:
        raise AdaptError(f"{dataset}: labels.jsonl names {len(missing)} files that are not there, e.g. {missing[0]}")
    adapt_files, held_files = split(files, held_out, seed)
    if shuffle_labels:  # a control: the same keywords and times, given to the wrong calls
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(adapt_files))
        moved = [labels[adapt_files[j]] for j in perm]
        labels = {**labels, **{f: CallLabel(f, lbl.services, lbl.keywords)
                               for f, lbl in zip(adapt_files, moved, strict=True)}}
    said = {k.keyword for f in adapt_files for k in labels[f].keywords}
    if not said:
        raise AdaptError(f"{dataset}: the adaptation part ({len(adapt_files)} calls) has no labelled keyword")

    proto, head = read_head(model.path)
    embed = embedder(proto, head)
    classes, p = model.classes, model.features
    window_s = p.window_samples / p.sample_rate
    progress(f"windows from {len(adapt_files)} adaptation calls")
    cws = []
    for f in adapt_files:
        times, windows = call_windows(model, read_wav_16k(dataset / f))
        cws.append(CallWindows(f, times, model.predict(windows).astype(np.float64), embed(windows), labels[f]))
    ys = [label_windows(cw, classes, window_s) for cw in cws]
    x = np.concatenate([cw.embeddings[y >= 0] for cw, y in zip(cws, ys, strict=True)])
    y = np.concatenate([y[y >= 0] for y in ys])
    counts = {c: int((y == i).sum()) for i, c in enumerate(classes)}
    progress(f"refitting the head on {len(y)} windows ({sum(v for k, v in counts.items() if k in KEYWORD_SERVICE)} "
             f"of keywords)")
    w, b = fit_head(x, y, head, l2=l2, steps=steps)

    adapted_head = Head(w, b, head.embedding_name, head.weights_name, head.bias_name)
    streaming = model.streaming
    calls = [(cw.times, smooth_posteriors(adapted_head.probabilities(cw.embeddings),
                                                 streaming.smoothing_windows(classes)), cw.label) for cw in cws]
    from triage.replay import MATCH_AFTER_END_S

    thresholds = calibrate(calls, classes, streaming.refractory_s, MATCH_AFTER_END_S,
                           model.thresholds)

    digest = hashlib.sha256(w.astype(np.float32).tobytes() + b.astype(np.float32).tobytes()).hexdigest()[:8]
    stamp = time.strftime("%Y%m%d", time.gmtime())
    name = f"{model.manifest.get('name', 'kws12').split('+')[0]}+{dataset.name}-{stamp}-{digest}"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.onnx"
    write_model(proto, head, w, b, path)
    step = {"step": step_with_head(model.manifest["step"], model.path.parent, w, b, path)} if model.stepper else {}
    manifest = {**model.manifest, **step, "name": name,
                "thresholds": {k: v["threshold"] for k, v in thresholds.items()},
                "adaptation": {"parent": model.version, "dataset": str(dataset), "adaptation_calls": adapt_files,
                               "held_out_calls": held_files, "windows": counts, "l2": l2, "steps": steps,
                               "seed": seed, "shuffled_labels": shuffle_labels, "thresholds": thresholds}}
    manifest_path_for(path).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    if model.gate is not None:  # the adapted model keeps its parent's gate, named in the copied manifest
        for gate_file in model.gate.files:
            _place_beside(gate_file, out_dir)
    adapted = KeywordModel(path)

    progress(f"measuring on {len(held_files)} held-out calls")
    held = Evaluation(measure(model, dataset, labels, held_files), measure(adapted, dataset, labels, held_files))
    ref = None
    if reference is not None:
        ref_labels = load_labels(reference / "labels.jsonl")
        ref_files = [f for f in sorted(ref_labels) if (reference / f).is_file()]
        progress(f"measuring on {len(ref_files)} reference calls")
        ref = Evaluation(measure(model, reference, ref_labels, ref_files),
                         measure(adapted, reference, ref_labels, ref_files))
    result = Adaptation(path, manifest, path.with_suffix(".md"), held, ref, counts, thresholds, adapt_files,
                        held_files)
    manifest["adaptation"].update({"held_out": held.__dict__, "reference": ref.__dict__ if ref else None,
                                   "refusals": result.refusals})
    manifest_path_for(path).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    result.card_path.write_text(model_card(result, model), encoding="utf-8")
    return result


def model_card(a: Adaptation, parent: KeywordModel) -> str:
    def row(name, ev: Evaluation | None):
        if ev is None:
            return f"| {name} | – | – | – | – |\n"
        s, d = ev.shipped, ev.adapted
        fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        return (f"| {name} ({d['calls']} calls, {d['keywords']} keywords) | {fmt(s['keyword_recall'])} → "
                f"{fmt(d['keyword_recall'])} | {fmt(s['route_exact_match'])} → {fmt(d['route_exact_match'])} | "
                f"{s['false_alarms']} → {d['false_alarms']} | {fmt(s['false_alarms_per_hour'])} → "
                f"{fmt(d['false_alarms_per_hour'])} |\n")
    verdict = ("**Refused**: " + "; ".join(a.refusals)) if a.refusals else "**Accepted**: not worse anywhere measured"
    thr = "".join(f"| {k} | {parent.thresholds[k]:g} | {v['threshold']:g} | {v['detected']}/{v['said']} | "
                  f"{v['false_alarms']} |\n" for k, v in a.thresholds.items())
    return (f"# {a.manifest['name']}\n\nAdapted from `{parent.version}` by `triage adapt` on "
            f"{len(a.adaptation_calls)} calls of `{a.manifest['adaptation']['dataset']}`; its last layer only "
            f"(see triage/adapt.py). {len(a.held_out_calls)} calls of the same dataset were held out.\n\n"
            f"{verdict}\n\n| measured with the live core | keyword recall | route exact match | false alarms | "
            f"false alarms / h |\n|---|---|---|---|---|\n{row('held-out calls', a.held_out)}"
            f"{row('project reference calls', a.reference)}\n"
            f"Training windows per class: {json.dumps(a.windows, ensure_ascii=False)}\n\n"
            f"| keyword | shipped threshold | adapted threshold | detected/said on the adaptation calls | "
            f"false alarms there |\n|---|---|---|---|---|\n{thr}")


def step_with_head(section: dict, directory: Path, weights: np.ndarray, bias: np.ndarray, model_path: Path) -> dict:
    """The step model of a manifest's `step` `section` (files in `directory`) with a new head, written as
    `<model stem>_step.onnx` beside `model_path`; returns the section naming it. The step model carries the
    same head as the windowed model, so whatever refits one refits both."""
    proto, head = read_head(directory / section["file"])
    out = model_path.with_name(f"{model_path.stem}_step.onnx")
    write_model(proto, head, weights, bias, out)
    return {**section, "file": out.name, "sha256": hashlib.sha256(out.read_bytes()).hexdigest()}


def _place_beside(file: Path, directory: Path) -> None:
    """Put a file a model's manifest names (its gate, its step model) in `directory`, beside the model."""
    import shutil

    dst = directory / file.name
    if dst.resolve() == file.resolve():
        return
    if dst.exists():
        if dst.read_bytes() != file.read_bytes():
            raise AdaptError(f"{dst}: another file already has this name; move it away first")
        return
    tmp = dst.with_suffix(".onnx.tmp")
    shutil.copy2(file, tmp)
    tmp.replace(dst)


def promote(a: Adaptation, target: Path) -> Path:
    """Copy the adapted model over the served one (the previous one kept beside it as .previous); the
    server picks it up on SIGHUP. Raises AdaptError with the reasons when the model was refused."""
    import shutil

    if a.refusals:
        raise AdaptError("not promoted: " + "; ".join(a.refusals))
    # files the manifest names, in place before the manifest that names them
    for section in (a.manifest.get("gate"), a.manifest.get("gate", {}).get("step"), a.manifest.get("step")):
        if section:
            _place_beside(a.model_path.parent / section["file"], target.parent)
    for suffix in (".onnx", ".json", ".md"):
        src, dst = a.model_path.with_suffix(suffix), target.with_suffix(suffix)
        if dst.exists():
            shutil.copy2(dst, dst.with_suffix(".previous" + suffix))
    # manifest last: a reader that sees the new manifest also finds the new weights
    for suffix in (".onnx", ".md", ".json"):
        src, dst = a.model_path.with_suffix(suffix), target.with_suffix(suffix)
        tmp = dst.with_suffix(suffix + ".tmp")
        shutil.copy2(src, tmp)
        tmp.replace(dst)
    return target
