"""One network taught by an ensemble: `python -m training.distill --student KERAS --models DIR`.

The shipped v7 is three networks trained apart, their logits averaged (training/ensemble.py): it finds
more keywords on unheard voices than any one of them, and costs three networks on every scored window,
which is most of the live service's CPU (issue #10). Here one network learns to say what the
ensemble says (knowledge distillation, Hinton et al. 2015), so the CPU of one network may keep most of
the ensemble's recall:

  1. the student: a keyword network from `python -m training`'s cache (a Keras file), transferred from
     the 8-word English base as every model here
  2. each epoch, the training speech augmented afresh and cut on the spotter's grid (training/windows.py),
     keyword-free windows, keyword windows and the windows holding part of a keyword, which the
     labelled recipe must leave out and the teacher can label; plus isolated-word windows
  3. targets: the teacher's posteriors softened by a temperature (the student learns how sure the
     teacher is, not only its argmax), mixed with the hard label where a window has one
  4. written as kws12.onnx + manifest (and student.keras, to go on from with another --seed); then
     `python -m training.calibrate --model DIR/kws12.onnx` chooses its operating point on dev voices

Only training voices are used; the dev and test voices stay unheard by teacher and student alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training import batches, dataset, export, models, speech, windows
from training.__main__ import _provenance, cached, log
from triage.features import FeatureParams
from triage.keywords import CLASSES, KEYWORDS, UNKNOWN
from triage.model import KeywordModel

ROOT = Path(__file__).resolve().parent.parent
HARD_FLOOR = 0.05  # keyword-free windows on which the teacher's likeliest keyword reaches this are all kept


def soften(p: np.ndarray, temperature: float) -> np.ndarray:
    """Posteriors → the distribution of their logits divided by `temperature` (any constant offset of
    the logits cancels, so log-posteriors serve as logits)."""
    z = np.log(np.clip(p.astype(np.float64), 1e-9, 1.0)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def targets(teacher_p: np.ndarray, labels: np.ndarray, temperature: float) -> np.ndarray:
    """(N, 2 C): the softened teacher, then the one-hot label (zeros for a window without one)."""
    hard = np.zeros_like(teacher_p, dtype=np.float32)
    has = labels >= 0
    hard[np.nonzero(has)[0], labels[has]] = 1.0
    return np.concatenate([soften(teacher_p, temperature), hard], axis=1)


def distillation_loss(n_classes: int, temperature: float, hard_weight: float):
    """Cross-entropy to the softened teacher (scaled by T², so its gradients keep their size whatever T),
    plus `hard_weight` of the cross-entropy to the label where there is one."""
    from keras import ops

    def loss(y_true, y_pred):
        soft, hard = y_true[:, :n_classes], y_true[:, n_classes:]
        logp = ops.log(ops.clip(y_pred, 1e-7, 1.0))
        lt = logp / temperature
        lt = lt - ops.logsumexp(lt, axis=1, keepdims=True)
        kd = -ops.sum(soft * lt, axis=1) * temperature ** 2
        ce = -ops.sum(hard * logp, axis=1)
        return (1.0 - hard_weight * ops.sum(hard, axis=1)) * kd + hard_weight * ce

    return loss


def teacher_posteriors(teacher: KeywordModel, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    return np.concatenate([teacher.predict_full(x[i: i + batch])
                           for i in tqdm(range(0, len(x), batch), desc="teacher", unit="batch")])


def epoch_windows(y: np.ndarray, teacher_p: np.ndarray, keyword_free: int, rng: np.random.Generator) -> np.ndarray:
    """Indices kept for an epoch: every keyword and part-keyword window, every keyword-free window the
    teacher gives a keyword some weight (≥ HARD_FLOOR), and `keyword_free` of the others at random."""
    free = y == CLASSES.index(UNKNOWN)
    top = teacher_p[:, : len(KEYWORDS)].max(axis=1)
    easy = np.nonzero(free & (top < HARD_FLOOR))[0]
    return np.sort(np.concatenate([np.nonzero(~free | (top >= HARD_FLOOR))[0],
                                   rng.choice(easy, size=min(len(easy), keyword_free), replace=False)]))


def described(student, start: Path) -> str:
    """The student as its model card names it: where it started, its size and its front end (the Keras
    model's own name, "kws_transfer", says neither)."""
    from training.pcen import PCEN

    frontend = "PCEN" if any(isinstance(layer, PCEN) for layer in models.flat_layers(student)) else "log-mel"
    return f"the network of {start.name} ({student.count_params():,} parameters, {frontend} front end)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.distill", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, default=ROOT / "models" / "kws12.onnx", help="the ensemble (ONNX)")
    ap.add_argument("--student", type=Path, required=True,
                    help="the Keras network to start from, e.g. python -m training's last mining round, "
                         "data/stages/<arch>/kws_fresh_mined6-v3.keras")
    ap.add_argument("--models", type=Path, required=True, help="where kws12.onnx and its manifest are written")
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--epochs", type=int, default=6, help="each on the training speech augmented afresh")
    ap.add_argument("--seed", type=int, default=0, help="another seed draws other augmentations (to go on from a "
                                                        "student this command made)")
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--hard-weight", type=float, default=0.2, help="share of the loss given to the labels")
    ap.add_argument("--keyword-free", type=int, default=40000,
                    help="keyword-free windows the teacher is sure of, kept per epoch (the rest are all kept)")
    ap.add_argument("--words", type=int, default=30000, help="isolated-word windows per epoch")
    ap.add_argument("--lr", type=float, default=5e-4, help="first epoch's peak; each epoch decays to a tenth")
    ap.add_argument("--speech-train", type=int, default=8000)
    ap.add_argument("--per-keyword", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)

    import keras

    keras.utils.set_random_seed(0)
    t0 = time.time()
    params = FeatureParams()
    teacher = KeywordModel(args.teacher, threads=args.workers)
    student = models.load(args.student, compile=False)
    utts = speech.load(speech.build(args.data, "train", args.speech_train, kokoro_share=0.15, kokoro_cap=500,
                                    workers=args.workers))
    banks = dataset.load_pools(args.data, "fr", held_out=False).banks
    words = cached(args.data / "stages" / f"kws_train_v{dataset.VERSION}_{args.per_keyword}.npz", lambda: dict(zip(
        ("x", "y"), dataset.build_train(args.data, params, args.per_keyword, workers=args.workers), strict=True)))
    log(f"teacher {teacher.version} on {len(words['y'])} isolated-word windows")
    words_p = teacher_posteriors(teacher, words["x"])
    n = len(CLASSES)
    history = []
    for epoch in range(args.epochs):
        t = time.time()
        rng = np.random.default_rng(epoch + 1000 * args.seed)  # seed 0: the run measured in training/README
        x, y = windows.build(utts, banks, params, seed=300 + 1000 * args.seed + epoch, passes=1, unknown_per_utt=10**6,
                             workers=args.workers, masked=True)
        p = teacher_posteriors(teacher, x)
        keep = epoch_windows(y, p, args.keyword_free, rng)
        w = rng.choice(len(words["y"]), size=min(len(words["y"]), args.words), replace=False)
        xe = np.concatenate([x[keep], words["x"][w]])
        ye = np.concatenate([targets(p[keep], y[keep], args.temperature),
                             targets(words_p[w], words["y"][w], args.temperature)])
        del x, p
        lr = args.lr * (1 - 0.8 * epoch / max(1, args.epochs - 1))
        steps = len(ye) // 128 + 1
        student.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.1)),
                        loss=distillation_loss(n, args.temperature, args.hard_weight))
        kept = y[keep]
        log(f"epoch {epoch + 1}/{args.epochs}: {len(ye)} windows ({int((kept == windows.MASKED).sum())} part-keyword, "
            f"{int((kept == CLASSES.index(UNKNOWN)).sum())} keyword-free), peak lr {lr:.1e}")
        fit = batches.fit(student, xe, ye, 128, seed=epoch + 1000 * args.seed, epochs=1)
        history.append({"epoch": epoch + 1, "windows": int(len(ye)), "loss": round(float(fit.history["loss"][-1]), 4),
                        "seconds": round(time.time() - t)})
        del xe, ye

    onnx_path = args.models / "kws12.onnx"
    args.models.mkdir(parents=True, exist_ok=True)
    student.save(args.models / "student.keras")  # where a later run can go on (--student)
    export.to_onnx(student, params, onnx_path)
    metrics = {
        "architecture": f"{described(student, args.student)}, distilled from {teacher.version} (training/distill.py)",
        "distillation": {"teacher": teacher.version, "student_start": str(args.student),
                         "temperature": args.temperature, "hard_weight": args.hard_weight, "epochs": history},
        "train_seconds": round(time.time() - t0),
    }
    export.write_manifest(onnx_path, name="kws12", classes=list(CLASSES), params=params,
                          streaming=dict(export.DEFAULT_STREAMING), thresholds={k: 0.5 for k in KEYWORDS},
                          metrics=metrics, provenance=_provenance("fr"))
    log(f"done in {time.time() - t0:.0f} s: {onnx_path}")
    print(json.dumps(metrics, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
