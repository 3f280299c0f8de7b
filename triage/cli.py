"""`triage` command line: thin adapters around the pure core. stdout carries results only."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from triage.audio import AudioError

PLANNED = {
    "serve": ("run the live service: websocket /call ingest, Redis routing, dashboard", "#5"),
    "call": ("stream a WAV file, a synthesized sentence or the microphone to the service", "#6"),
    "dispatch": ("terminal dispatcher console for one service's queue", "#5"),
}


def _err(msg: str) -> None:
    print(f"triage: {msg}", file=sys.stderr, flush=True)


def _not_yet(name: str, issue: str):
    def run(args: argparse.Namespace) -> int:
        _err(f"{name}: not implemented yet (tracked in issue {issue})")
        return 2
    return run


def _load_model(args):
    from triage.model import KeywordModel, ModelError

    try:
        return KeywordModel(args.model)
    except ModelError as e:
        _err(str(e))
        raise SystemExit(3) from None


def _progress(items, desc: str, show: bool):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", disable=not show, file=sys.stderr)


def cmd_classify(args) -> int:
    from triage.audio import read_wav_16k
    from triage.classify import classify

    model = _load_model(args)
    failed = 0
    for f in _progress(args.files, "classifying", len(args.files) > 20):
        try:
            result = classify(model, read_wav_16k(f))
        except AudioError as e:
            _err(str(e))
            failed += 1
            continue
        if args.json:
            print(json.dumps({"file": f, "label": result.label, "confidence": round(result.confidence, 4)},
                             ensure_ascii=False), flush=True)
        else:
            print(f"{f}\t{result.label}\t{result.confidence:.3f}", flush=True)
    return 1 if failed else 0


def cmd_replay(args) -> int:
    from triage.audio import read_wav_16k
    from triage.replay import load_labels, replay_samples, score, write_report

    model = _load_model(args)
    try:
        labels = load_labels(args.labels) if args.labels else None
    except (OSError, ValueError) as e:
        _err(str(e))
        return 2
    results, failed = [], 0
    for f in _progress(args.files, "replaying", len(args.files) > 1):
        try:
            samples = read_wav_16k(f)
        except AudioError as e:
            _err(str(e))
            failed += 1
            continue
        r = replay_samples(model, samples, f, trace=args.report is not None)
        results.append(r)
        if args.json:
            print(json.dumps(r.to_json(), ensure_ascii=False), flush=True)
        else:
            dets = ", ".join(f"{d.keyword}@{d.time:.1f}s({d.confidence:.2f})" for d in r.detections) or "-"
            print(f"{f}\tservices {r.services or '-'}\t{dets}", flush=True)
    metrics = score(results, labels) if labels else None
    if metrics is not None:
        _err("metrics: " + json.dumps(metrics.summary()))
    if args.report is not None:
        out = write_report(args.report, model, results, labels, metrics)
        _err(f"report written to {out}")
    return 1 if failed else 0


def cmd_demo(args) -> int:
    from triage.audio import read_wav_16k
    from triage.keywords import SERVICE_BY_NUMBER
    from triage.replay import replay_samples

    model = _load_model(args)
    demo_dir = Path(__file__).parent / "demo"
    calls = sorted(demo_dir.glob("*.wav"))
    if not calls:
        _err(f"no demo calls in {demo_dir}")
        return 2
    _err("live service not implemented yet (issue #5): routing the bundled demo calls offline instead")
    for f in calls:
        r = replay_samples(model, read_wav_16k(f), f.name)
        route = " + ".join(f"{s} {SERVICE_BY_NUMBER[s].name}" for s in r.decision.services) or "no route"
        heard = ", ".join(f"« {d.keyword} » at {d.time:.1f} s" for d in r.detections) or "no keyword"
        print(f"{f.name}: {route}  ({heard})", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triage",
        description="Route French emergency calls to SAMU (15), police (17) or pompiers (18) by spotting "
                    "keywords in the caller's speech.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def model_arg(p):
        p.add_argument("--model", type=Path, default=None,
                       help="ONNX model with its .json manifest beside it (default: models/kws12.onnx)")

    p = sub.add_parser("classify", help="label short clips: one of the 12 keywords, _unknown_ or _silence_",
                       description="Label each WAV clip (any rate; PCM16, float32, mu-law, A-law). "
                                   "One result per line, in order; unreadable files are reported on stderr "
                                   "and make the exit status 1.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="JSON lines: file, label, confidence")
    model_arg(p)
    p.set_defaults(run=cmd_classify)

    p = sub.add_parser("replay", help="run recorded calls through the live core: detections and routes",
                       description="Replay recorded calls (WAV, any rate and encoding) through exactly the live "
                                   "spotter and router, faster than real time.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="JSON lines: file, services, detections")
    p.add_argument("--labels", type=Path, help="JSON-lines labels; prints metrics on stderr")
    p.add_argument("--report", type=Path, metavar="DIR", help="write an HTML report with a timeline per call")
    model_arg(p)
    p.set_defaults(run=cmd_replay)

    p = sub.add_parser("demo", help="route the bundled demo calls", description="Route the bundled demo calls.")
    model_arg(p)
    p.set_defaults(run=cmd_demo)

    for name, (help_text, issue) in PLANNED.items():
        p = sub.add_parser(name, help=f"{help_text} [not implemented yet]", description=help_text)
        p.set_defaults(run=_not_yet(name, issue))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
