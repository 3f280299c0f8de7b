"""The feedback loop on labelled calls: simulated dispatchers review every call, `triage report` measures.

Each model replays its share of the labelled calls through the live core; every detection and route goes
through the real RouteStore into a real (embedded) Redis, as the server writes them. A simulated dispatcher
then does what the labels say a careful one would: confirms right routes, re-routes wrong ones, marks
detections of words not said as wrong, and points at keywords the model missed (at the middle of the word).
The report computed from that feedback is printed beside what `replay --labels` says of the same calls:
they must agree, which checks the report; the HTML page (and with --screenshot, a PNG of it) shows what a
centre would see.

    python bench/feedback_report.py --calls data/calls/test --models OLD.onnx models/kws12.onnx --out /tmp/report
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from triage import eventloop, feedback  # noqa: E402
from triage.audio import read_wav_16k  # noqa: E402
from triage.embedded_redis import EmbeddedRedis  # noqa: E402
from triage.model import KeywordModel  # noqa: E402
from triage.replay import MATCH_AFTER_END_S, load_labels, replay_samples, score  # noqa: E402
from triage.report import write_html  # noqa: E402
from triage.router import CallRouter  # noqa: E402
from triage.store import RouteStore  # noqa: E402


async def review(store: RouteStore, model: KeywordModel, call_id: str, path: Path, label) -> object:
    result = replay_samples(model, read_wav_16k(path), path.name)
    await store.save_call(call_id, {"state": "ended", "model": model.version, "duration": f"{result.duration:.3f}"})
    router = CallRouter()
    for d in result.detections:
        await store.record_decision({"type": "detection", "call_id": call_id, **d.to_dict()}, model.version)
        decision = router.update([d])
        if decision is not None:
            await store.record_decision({"type": "route", "call_id": call_id, **decision.to_dict()}, model.version)
            for s in decision.services:
                await store.route(call_id, s, decision.keywords[s], [], decision.first_time(s))
    truth, routed = set(label.services), set(result.services)
    def heard(d, k) -> bool:
        return d.keyword == k.keyword and k.start <= d.time <= k.end + MATCH_AFTER_END_S

    for d in result.detections:
        if not any(heard(d, k) for k in label.keywords):
            await store.mark_wrong(call_id, d.keyword, d.time, "sim", d.service)
    for k in label.keywords:
        if not any(heard(d, k) for d in result.detections):
            await store.mark_missed(call_id, k.keyword, (k.start + k.end) / 2, "sim", 0)
    spare = sorted(truth - routed)
    for s in sorted(routed):
        if s in truth:
            await store.confirm(call_id, s, "sim")
        elif spare:
            await store.claim(call_id, s, "sim")
            await store.reroute(call_id, s, spare.pop(0), "sim")
    return result


async def main_async(args) -> dict:
    labels = load_labels(args.calls / "labels.jsonl")
    files = sorted(labels)[: args.n]
    share = -(-len(files) // len(args.models))
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis:
        store = RouteStore(redis.url)
        await store.ensure_groups()
        replayed = {}
        for i, path in enumerate(args.models):
            model = KeywordModel(path)
            mine = files[i * share: (i + 1) * share]
            results = [await review(store, model, f"{i}-{Path(f).stem}", args.calls / f, labels[f]) for f in mine]
            replayed[model.version] = score(results, labels).summary()
            print(f"{model.version}: {len(mine)} calls reviewed", file=sys.stderr)
        rep = feedback.report(await store.reviews())
        await store.close()
    args.out.mkdir(parents=True, exist_ok=True)
    write_html(rep, args.out / "index.html")
    (args.out / "report.json").write_text(json.dumps(rep, ensure_ascii=False, indent=1), encoding="utf-8")
    return {version: {"report": {k: rep["models"][version][k] for k in ("calls", "route_exact_match",
                                                                        "false_alarms")} |
                      {"keyword_recall": _recall(rep["models"][version])},
                      "replay": {k: replayed[version][k] for k in ("calls", "route_exact_match", "false_alarms",
                                                                   "keyword_recall")}}
            for version in replayed}


def _recall(block: dict) -> float | None:
    kws = block["per_keyword"].values()
    said = sum(v["correct"] + v["missed"] for v in kws)
    return sum(v["correct"] for v in kws) / said if said else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=Path, default=Path("models/reference"), help="labelled calls (labels.jsonl)")
    ap.add_argument("--models", type=Path, nargs="+", default=[Path("models/kws12.onnx")],
                    help="one or more models; each reviews its share of the calls, in order (the trend)")
    ap.add_argument("-n", "--n", type=int, default=10_000, help="at most this many calls")
    ap.add_argument("--out", type=Path, required=True, help="directory for index.html and report.json")
    ap.add_argument("--screenshot", type=Path, help="also save a PNG of the page (headless Chromium)")
    args = ap.parse_args()
    print(json.dumps(eventloop.run(main_async(args))))
    if args.screenshot:
        screenshot(args.out / "index.html", args.screenshot)
    return 0


def screenshot(page: Path, png: Path) -> None:
    import shutil

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        tab = browser.new_page(viewport={"width": 1150, "height": 1600})
        tab.goto(page.resolve().as_uri())
        tab.screenshot(path=str(png), full_page=True)
        browser.close()


if __name__ == "__main__":
    raise SystemExit(main())
