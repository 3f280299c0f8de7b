"""Test-time frequency warping (measured, not shipped; training/README.md): a keyword model wrapped so that
each window is scored as it is and with its mel axis warped as if the speaker's formants sat a factor α
higher, the class probabilities averaged. A guard against unheard voices that costs one model pass per
warp on the windows the gate lets through.

    python -m training.tta OUT_DIR --alphas 0.9,1.1 [--model models/kws12.onnx]
    python -m training.calibrate --model OUT_DIR/kws12.onnx
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from triage.features import FeatureParams, mel_edges
from triage.model import DEFAULT_MODEL, manifest_path_for


def warp_matrix(p: FeatureParams, alpha: float) -> np.ndarray:
    """(n_mels, n_mels) W such that `window @ W.T` shows at each band's centre f what the window held at
    f / alpha (linear interpolation between band centres, clamped at both ends)."""
    centres = mel_edges(p)[1:-1]
    position = np.interp(centres / alpha, centres, np.arange(len(centres)))
    w = np.zeros((len(centres), len(centres)), np.float32)
    below = np.floor(position).astype(int)
    frac = (position - below).astype(np.float32)
    rows = np.arange(len(centres))
    np.add.at(w, (rows, below), 1 - frac)
    np.add.at(w, (rows, np.minimum(below + 1, len(centres) - 1)), frac)
    return w


def wrap(model: Path, out_dir: Path, alphas: list[float]) -> Path:
    """Write OUT_DIR/<model name>.onnx: the model on the window and on each warp of it, probabilities
    averaged; its manifest (and gate, if any) beside it."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(model)
    g = m.graph
    source, output = g.input[0].name, g.output[0].name
    for node in g.node:
        node.input[:] = ["tta_all" if x == source else x for x in node.input]
        node.output[:] = ["tta_probs_all" if x == output else x for x in node.output]
    manifest = json.loads(manifest_path_for(model).read_text(encoding="utf-8"))
    p = FeatureParams.from_dict(manifest["features"])
    opset = max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    n_classes = g.output[0].type.tensor_type.shape.dim[-1].dim_value
    inits = [numpy_helper.from_array(np.array([3], np.int64), "tta_axis3"),
             numpy_helper.from_array(np.array([len(alphas) + 1, -1, n_classes], np.int64), "tta_shape")]
    head = [helper.make_node("Squeeze", [source, "tta_axis3"], ["tta_mel"])]
    branches = [source]
    for k, alpha in enumerate(alphas):
        inits.append(numpy_helper.from_array(warp_matrix(p, alpha).T.copy(), f"tta_warp{k}"))
        head += [helper.make_node("MatMul", ["tta_mel", f"tta_warp{k}"], [f"tta_warped{k}"]),
                 helper.make_node("Unsqueeze", [f"tta_warped{k}", "tta_axis3"], [f"tta_in{k}"])]
        branches.append(f"tta_in{k}")
    head.append(helper.make_node("Concat", branches, ["tta_all"], axis=0))
    tail = [helper.make_node("Reshape", ["tta_probs_all", "tta_shape"], ["tta_probs"])]
    if opset >= 18:
        inits.append(numpy_helper.from_array(np.array([0], np.int64), "tta_axis0"))
        tail.append(helper.make_node("ReduceMean", ["tta_probs", "tta_axis0"], [output], keepdims=0))
    else:
        tail.append(helper.make_node("ReduceMean", ["tta_probs"], [output], axes=[0], keepdims=0))
    nodes = head + list(g.node) + tail
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(inits)
    onnx.checker.check_model(m)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / model.name
    onnx.save(m, out)
    manifest["name"] = f"{manifest.get('name', model.stem)}-warped{','.join(map(str, alphas))}"
    manifest_path_for(out).write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    if "gate" in manifest:
        shutil.copy(model.parent / manifest["gate"]["file"], out_dir / manifest["gate"]["file"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.tta", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--alphas", default="0.9,1.1", help="comma-separated formant factors, besides 1")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    args = ap.parse_args(argv)
    print(wrap(args.model, args.out_dir, [float(a) for a in args.alphas.split(",") if a]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
