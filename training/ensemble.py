"""Two or more keyword networks served as one: their logits averaged under a single softmax head.

    python -m training.ensemble models/kws12.onnx a/kws12.onnx b/kws12.onnx   # then: python -m training.calibrate
    python -m training.ensemble out.onnx v7/kws12.onnx new/kws12.onnx --shares 0.75,0.25

Each member is an exported keyword model (`python -m training`, trained from its own start), or an
ensemble already. Averaging their logits, each at its share s_i (equal by default; --shares gives a member
that is itself an ensemble of three networks three quarters, so that every network counts the same), is one
linear head on the members' concatenated embeddings:

    sum_i s_i (W_i e_i + b_i) = [s_1 W_1 … s_n W_n] · [e_1; …; e_n] + sum_i s_i b_i

so the ensemble keeps the Softmax(MatMul + bias) head that `triage adapt` refits and stage 5b's refit
reads (`triage.adapt.read_head`), and serving needs nothing new: one ONNX file, one manifest. Members
must share the feature parameters and the class list; the manifest written is the first member's, with a
fresh export's streaming and thresholds for `training.calibrate` to set, the members named by their sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from training import dataset, evaluate, export
from triage.adapt import read_head
from triage.keywords import KEYWORDS
from triage.model import manifest_path_for

ROOT = Path(__file__).resolve().parents[1]


class EnsembleError(ValueError):
    """The members cannot be combined; the message says which and why."""


def _member(path: Path) -> tuple[dict, object, object]:
    try:
        manifest = json.loads(manifest_path_for(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError) as e:
        raise EnsembleError(f"{path}: its manifest {manifest_path_for(path).name} is missing or unreadable "
                            f"({e})") from None
    if manifest.get("step") or manifest.get("gate"):
        raise EnsembleError(f"{path}: a member with a step model or a gate cannot be averaged (their states and "
                            "rejections are per network)")
    proto, head = read_head(path)
    return manifest, proto, head


def combine(members: list[Path], shares: list[float] | None = None) -> tuple[object, dict]:
    """(ONNX ModelProto, manifest) of the members' logit average, weighted by `shares` (default: equal)."""
    import onnx
    from onnx import compose, helper, numpy_helper

    if len(members) < 2:
        raise EnsembleError("an ensemble needs at least two members")
    shares = [1.0 / len(members)] * len(members) if shares is None else list(shares)
    if len(shares) != len(members) or not all(s > 0 for s in shares) or abs(sum(shares) - 1) > 1e-6:
        raise EnsembleError(f"shares {shares}: one positive share per member ({len(members)}), summing to 1")
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in members]
    if len(set(digests)) < len(digests):
        raise EnsembleError("the same network is given twice; an ensemble's members are trained apart")
    loaded = [_member(p) for p in members]
    first, proto0 = loaded[0][0], loaded[0][1]

    def graph_said(proto) -> tuple:
        t = proto.graph.input[0].type.tensor_type  # a symbolic batch dimension may be named anything
        return (proto.ir_version, sorted((o.domain, o.version) for o in proto.opset_import), t.elem_type,
                [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim])
    for p, (m, proto, _) in zip(members[1:], loaded[1:], strict=True):
        for key in ("features", "classes", "input"):
            if m.get(key) != first.get(key):
                raise EnsembleError(f"{p}: its {key} differ from {members[0]}'s; members must agree on them")
        if graph_said(proto) != graph_said(proto0):
            raise EnsembleError(f"{p}: its ONNX IR version, opsets or input type differ from {members[0]}'s "
                                "(export both with the same tf2onnx and onnx)")
    input_name = proto0.graph.input[0].name
    nodes, inits, embeddings = [], [], []
    for i, (_, proto, head) in enumerate(loaded):
        own_input = f"m{i}_{proto.graph.input[0].name}"
        proto = compose.add_prefix(proto, f"m{i}_")
        producer = {o: n for n in proto.graph.node for o in n.output}
        # the member's body: every node its embedding depends on (its head, and nothing else, is left out)
        needed, stack = set(), [f"m{i}_{head.embedding_name}"]
        while stack:
            n = producer.get(stack.pop())
            if n is not None and id(n) not in needed:
                needed.add(id(n))
                stack.extend(n.input)
        for n in proto.graph.node:
            if id(n) in needed:
                n.input[:] = [input_name if x == own_input else x for x in n.input]
                nodes.append(n)
        used = {x for n in proto.graph.node if id(n) in needed for x in n.input}
        inits += [t for t in proto.graph.initializer if t.name in used]
        embeddings.append(f"m{i}_{head.embedding_name}")
    n = len(loaded)
    weights = np.concatenate([share * h.weights for share, (_, _, h) in zip(shares, loaded, strict=True)])
    bias = np.sum([share * h.bias for share, (_, _, h) in zip(shares, loaded, strict=True)], axis=0)
    inits += [numpy_helper.from_array(weights.astype(np.float32), "ensemble_head_weights"),
              numpy_helper.from_array(bias.astype(np.float32), "ensemble_head_bias")]
    output = proto0.graph.output[0]
    nodes += [helper.make_node("Concat", embeddings, ["ensemble_embedding"], axis=1),
              helper.make_node("MatMul", ["ensemble_embedding", "ensemble_head_weights"], ["ensemble_logits_w"]),
              helper.make_node("Add", ["ensemble_logits_w", "ensemble_head_bias"], ["ensemble_logits"]),
              helper.make_node("Softmax", ["ensemble_logits"], [output.name], axis=-1)]
    graph = helper.make_graph(nodes, "ensemble", [proto0.graph.input[0]], [output], inits)
    model = helper.make_model(graph, opset_imports=proto0.opset_import)
    model.ir_version = proto0.ir_version
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise EnsembleError(f"the joined graph is not valid ONNX: {e}") from None
    # as a fresh export: default streaming and thresholds, for training.calibrate to choose
    manifest = {**first, "streaming": dict(export.DEFAULT_STREAMING), "thresholds": {k: 0.5 for k in KEYWORDS}}
    members_said = [{"file": p.name, "sha256": d, "share": share, "metrics": m.get("metrics", {})}
                    for p, d, share, (m, _, _) in zip(members, digests, shares, loaded, strict=True)]
    averaged = "averaged" if len(set(shares)) == 1 else f"averaged at shares {', '.join(f'{x:.3g}' for x in shares)}"
    manifest["metrics"] = {"architecture": f"ensemble of {n} members trained apart, their logits {averaged} under "
                                           "one softmax head (training/ensemble.py)", "ensemble_members": members_said}
    return model, manifest


def clip_report(onnx_path: Path, ev: dataset.EvalSet) -> dict:
    """A keyword model (an ensemble or a member) on the held-out-voice clips, as `python -m training` evaluates
    a trained network."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return evaluate.evaluate(lambda x: np.concatenate([session.run(None, {name: x[i: i + 512, ..., None]})[0]
                                                       for i in range(0, len(x), 512)]), ev)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.ensemble", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the ensemble's .onnx (its manifest is written beside it)")
    ap.add_argument("members", type=Path, nargs="+", help="exported keyword models (.onnx with their manifests)")
    ap.add_argument("--shares", type=lambda t: [float(x) for x in t.split(",")], default=None,
                    help="comma-separated share of each member's logits, summing to 1 (default: equal)")
    ap.add_argument("--eval-set", type=Path, default=ROOT / "data" / "stages" / f"kws_eval_v{dataset.VERSION}.npz",
                    help="the held-out-voice clip windows `python -m training` cached, to evaluate the ensemble on")
    args = ap.parse_args(argv)
    import onnx

    try:
        model, manifest = combine(args.members, args.shares)
    except EnsembleError as e:
        raise SystemExit(f"error: {e}") from None
    if not args.eval_set.is_file():
        raise SystemExit(f"error: {args.eval_set}: no clip evaluation set; `python -m training` builds it")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    mpath = manifest_path_for(args.out)
    # the model and its manifest are written together: a stale manifest is never left beside a new model
    onnx.save(model, str(args.out))
    export.save_manifest(mpath, manifest)
    with np.load(args.eval_set, allow_pickle=True) as z:
        ev = dataset.EvalSet.from_arrays(z)
    report = clip_report(args.out, ev)
    manifest["metrics"].update(shipped={"fine_tuned": evaluate.summary(report)},
                               eval_windows_per_condition=report["n_windows"])
    # each member's clips measured the same way (its exported file, head refit included), to compare with
    for member, path in zip(manifest["metrics"]["ensemble_members"], args.members, strict=True):
        member["clips_exported"] = evaluate.summary(clip_report(path, ev))
    args.out.with_name(args.out.stem + "_eval.json").write_text(
        json.dumps({"ensemble": {"fine_tuned": report}}, indent=1, ensure_ascii=False))
    evaluate.plot_confusions(report, args.out.with_name(args.out.stem + "_confusion.png"),
                             f"{args.out.stem} on held-out synthetic voices (rows: true class)")
    export.save_manifest(mpath, manifest)
    print(f"{args.out}: {len(args.members)} members; set its operating point with "
          f"python -m training.calibrate --model {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
