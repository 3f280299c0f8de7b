"""How much `_silence_` counts against `_unknown_` in `triage classify`: `python -m training.clips`.

On the held-out clips in the phone condition, background babble alone (a `_silence_` clip: nobody speaking
to the line) was labelled `_silence_` 30.5 % of the time by v8.2 and `_unknown_` most of the rest, while no
speech clip was labelled `_silence_`: the network's silence probability is too shy. A weight on it,
where a clip has no keyword, moves that boundary without touching any keyword decision:

  1. the clip evaluation set of `python -m training` (every held-out voice, clean / phone / room), scored by
     the full model
  2. dev: the clips of training.voices.DEV_VOICES and every other `_silence_` clip; test: the clips of
     TEST_VOICES and the other `_silence_` clips
  3. the weight of WEIGHTS with the highest dev 14-class accuracy (mean over the conditions) among those that
     take at most MAX_SPEECH_AS_SILENCE of the dev speech clips for silence; the smaller weight on a tie
  4. written to the manifest (`clips`: the weight, the rule, dev and test rows for every weight); the model's
     clip report (`kws12_eval.json`, the manifest's metrics, the confusion plot) measured again with it;
     then `python -m training.model_card`
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from training import dataset, evaluate, export
from training.voices import DEV_VOICES, TEST_VOICES
from triage.keywords import CLASSES, SILENCE
from triage.model import KeywordModel, manifest_path_for

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = (1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0)
MAX_SPEECH_AS_SILENCE = 0.001


def splits(ev: dataset.EvalSet) -> dict[str, np.ndarray]:
    """Dev and test masks over the clips: whole voices, and the `_silence_` clips (no voice) by turns."""
    voice = np.array(ev.voice)
    silence = (ev.y == CLASSES.index(SILENCE)) & (voice == "none")
    turn = np.cumsum(silence) % 2 == 1
    return {"dev": np.isin(voice, list(DEV_VOICES)) | (silence & turn),
            "test": np.isin(voice, list(TEST_VOICES)) | (silence & ~turn)}


def rows(probs: dict[str, np.ndarray], y: np.ndarray, mask: np.ndarray) -> list[dict]:
    """Per weight: 14-class accuracy per condition and their mean, `_silence_` recall, speech taken for silence."""
    sil = CLASSES.index(SILENCE)
    out = []
    for w in WEIGHTS:
        acc, sil_ok, speech_as_sil = {}, [], 0
        for cond, p in probs.items():
            pred = evaluate.labels(p[mask], w)
            acc[cond] = round(float((pred == y[mask]).mean()), 4)
            sil_ok.append(float((pred[y[mask] == sil] == sil).mean()))
            speech_as_sil += int(((pred == sil) & (y[mask] != sil)).sum())
        out.append({"silence_weight": w, "accuracy": acc, "mean_accuracy": round(float(np.mean(list(acc.values()))), 4),
                    "silence_recall": round(float(np.mean(sil_ok)), 4), "speech_taken_for_silence": speech_as_sil,
                    "speech_clips": int((y[mask] != sil).sum()) * len(probs)})
    return out


def choose(dev_rows: list[dict]) -> float:
    allowed = [r for r in dev_rows if r["speech_taken_for_silence"] <= MAX_SPEECH_AS_SILENCE * r["speech_clips"]]
    return max(allowed, key=lambda r: (r["mean_accuracy"], -r["silence_weight"]))["silence_weight"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.clips", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "kws12.onnx")
    ap.add_argument("--eval-set", type=Path, default=ROOT / "data" / "stages" / f"kws_eval_v{dataset.VERSION}.npz")
    args = ap.parse_args(argv)
    if not args.eval_set.is_file():
        raise SystemExit(f"error: {args.eval_set}: no clip evaluation set; `python -m training` builds it")
    with np.load(args.eval_set, allow_pickle=True) as z:
        ev = dataset.EvalSet.from_arrays(z)
    model = KeywordModel(args.model)
    probs = {c: model.predict_full(x.astype(np.float32)) for c, x in ev.x.items()}
    masks = splits(ev)
    dev, test = rows(probs, ev.y, masks["dev"]), rows(probs, ev.y, masks["test"])
    weight = choose(dev)
    for d, t in zip(dev, test, strict=True):
        print(f"weight {d['silence_weight']:g}: dev {d['accuracy']} silence {d['silence_recall']:.3f} speech→silence "
              f"{d['speech_taken_for_silence']} | test {t['accuracy']} silence {t['silence_recall']:.3f} "
              f"speech→silence {t['speech_taken_for_silence']}")
    mpath = manifest_path_for(args.model)
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    manifest["clips"] = {
        "silence_weight": weight,
        "method": f"the weight, of {', '.join(f'{w:g}' for w in WEIGHTS)}, with the highest mean 14-class accuracy "
                  "on the dev clips (dev voices, every other `_silence_` clip) among those taking at most "
                  f"{100 * MAX_SPEECH_AS_SILENCE:.1f} % of the dev speech clips for silence (training/clips.py)",
        "dev": dev, "test": test}
    report = evaluate.evaluate(model.predict_full, ev, weight)
    manifest["metrics"]["shipped"] = {**manifest["metrics"].get("shipped", {}), "fine_tuned": evaluate.summary(report)}
    eval_path = args.model.with_name(args.model.stem + "_eval.json")
    evals = json.loads(eval_path.read_text(encoding="utf-8")) if eval_path.is_file() else {}
    key = "ensemble" if "ensemble" in evals or "ds_cnn" not in evals else "ds_cnn"  # as model_card reads it
    evals.setdefault(key, {})["fine_tuned"] = report
    eval_path.write_text(json.dumps(evals, indent=1, ensure_ascii=False))
    evaluate.plot_confusions(report, args.model.with_name(args.model.stem + "_confusion.png"),
                             f"{args.model.stem} on held-out synthetic voices (rows: true class)")
    export.save_manifest(mpath, manifest)
    print(f"{mpath}: clips.silence_weight {weight:g}; now `python -m training.model_card`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
