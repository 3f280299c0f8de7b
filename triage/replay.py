"""Recorded calls through exactly the live core (KeywordSpotter + CallRouter), faster than real time.

`replay_samples` is pure; `score` compares results with labels (route accuracy, keyword recall,
false alarms per hour of keyword-free speech, detection latency); `write_report` draws them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from triage.model import KeywordModel
from triage.router import CallRouter, RouteDecision
from triage.spotter import Detection, KeywordSpotter

# A detection counts for a labelled keyword if it fires between the word's start and this long after
# its end (the window has to take the word in; later than this it would be a wrong route's delay).
MATCH_AFTER_END_S = 1.0


@dataclass
class CallResult:
    file: str
    duration: float
    detections: list[Detection]
    decision: RouteDecision
    trace: list[tuple[float, np.ndarray, float]] | None = None  # KeywordSpotter.trace
    envelope: np.ndarray | None = None  # RMS per 10 ms, for plots

    @property
    def services(self) -> list[int]:
        return sorted(self.decision.services)

    def to_json(self) -> dict:
        return {"file": self.file, "services": self.services,
                "detections": [d.to_dict() for d in self.detections]}


def replay_samples(model: KeywordModel, samples: np.ndarray, name: str = "", chunk_s: float = 1.0,
                   trace: bool = False) -> CallResult:
    """Feed 16 kHz samples chunk by chunk, as a live call would arrive (chunking does not change results)."""
    step = max(1, int(chunk_s * model.features.sample_rate))
    return replay_blocks(model, (samples[i: i + step] for i in range(0, len(samples), step)), name, trace)


def replay_blocks(model: KeywordModel, blocks: Iterable[np.ndarray], name: str = "",
                  trace: bool = False) -> CallResult:
    """Feed 16 kHz blocks of any sizes in order; memory stays flat whatever the recording's length
    (with `trace`, the plot data grows by 16 numbers per 100 ms)."""
    spotter = KeywordSpotter(model, trace=trace)
    router = CallRouter()
    rate = model.features.sample_rate
    hop = rate // 100
    detections: list[Detection] = []
    envelope, rest = [], np.zeros(0, np.float32)
    for block in blocks:
        new = spotter.feed(block)
        detections += new
        router.update(new)
        if trace:  # RMS per 10 ms, carried across block edges
            x = np.concatenate([rest, block])
            n = len(x) // hop
            envelope.append(np.sqrt(np.mean(np.square(x[: n * hop].reshape(n, hop), dtype=np.float64), axis=1)))
            rest = x[n * hop:]
    env = np.concatenate(envelope) if trace and envelope else None
    return CallResult(name, spotter.time, detections, router.decision, spotter.trace, env)


# --- labels and metrics --------------------------------------------------------------------------

@dataclass(frozen=True)
class KeywordLabel:
    keyword: str
    start: float
    end: float


@dataclass(frozen=True)
class CallLabel:
    file: str
    services: tuple[int, ...]
    keywords: tuple[KeywordLabel, ...] = ()


def load_labels(path: Path) -> dict[str, CallLabel]:
    """JSON lines: {"file": "call01.wav", "services": [18], "keywords": [{"keyword", "start", "end"}]}.

    Matched to replayed files by file name (without directories).
    """
    labels = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            lbl = CallLabel(Path(d["file"]).name, tuple(sorted(int(s) for s in d["services"])),
                            tuple(KeywordLabel(k["keyword"], float(k["start"]), float(k["end"]))
                                  for k in d.get("keywords", [])))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{n}: bad label line ({e}); expected "
                             '{"file": ..., "services": [...], "keywords": [{"keyword", "start", "end"}]}') from None
        labels[lbl.file] = lbl
    return labels


@dataclass
class Metrics:
    calls: int = 0
    route_exact: int = 0
    keywords: int = 0
    keywords_detected: int = 0
    false_alarms: int = 0
    keyword_free_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    per_call: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        lat = np.array(self.latencies) if self.latencies else np.array([np.nan])
        hours = self.keyword_free_seconds / 3600
        return {
            "calls": self.calls,
            "route_exact_match": self.route_exact / self.calls if self.calls else None,
            "keywords": self.keywords,
            "keyword_recall": self.keywords_detected / self.keywords if self.keywords else None,
            "false_alarms": self.false_alarms,
            "keyword_free_hours": round(hours, 4),
            "false_alarms_per_hour": self.false_alarms / hours if hours else None,
            "latency_p50_s": float(np.nanpercentile(lat, 50)),
            "latency_p95_s": float(np.nanpercentile(lat, 95)),
        }


def score(results: list[CallResult], labels: dict[str, CallLabel]) -> Metrics:
    m = Metrics()
    for r in results:
        lbl = labels.get(Path(r.file).name)
        if lbl is None:
            continue
        m.calls += 1
        exact = tuple(r.services) == lbl.services
        m.route_exact += exact
        used = set()
        hits = 0
        for k in lbl.keywords:
            m.keywords += 1
            match = next((i for i, d in enumerate(r.detections) if i not in used and d.keyword == k.keyword
                          and k.start <= d.time <= k.end + MATCH_AFTER_END_S), None)
            if match is not None:
                used.add(match)
                hits += 1
                m.latencies.append(r.detections[match].time - k.end)
        m.keywords_detected += hits
        # Other detections of a labelled keyword near its word are repeats, not false alarms.
        extra = [d for i, d in enumerate(r.detections) if i not in used and not any(
            d.keyword == k.keyword and k.start <= d.time <= k.end + MATCH_AFTER_END_S for k in lbl.keywords)]
        m.false_alarms += len(extra)
        m.keyword_free_seconds += r.duration - sum(k.end - k.start for k in lbl.keywords)
        m.per_call.append({"file": r.file, "expected": list(lbl.services), "got": r.services, "exact": exact,
                           "keywords": len(lbl.keywords), "detected": hits, "false_alarms": len(extra)})
    return m


# --- report ----------------------------------------------------------------------------------------

def write_report(directory: Path, model: KeywordModel, results: list[CallResult],
                 labels: dict[str, CallLabel] | None, metrics: Metrics | None) -> Path:
    """index.html with the metrics table and one timeline plot per call."""
    import html

    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("--report needs matplotlib (pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, r in enumerate(results):
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 4.5), sharex=True)
        if r.envelope is not None:
            t = np.arange(len(r.envelope)) / 100
            ax1.plot(t, 20 * np.log10(r.envelope + 1e-6), lw=0.6, color="#555")
        ax1.set_ylabel("level (dBFS)")
        lbl = (labels or {}).get(Path(r.file).name)
        for k in (lbl.keywords if lbl else ()):
            for ax in (ax1, ax2):
                ax.axvspan(k.start, k.end, color="#ffd54f", alpha=0.4)
            ax1.text(k.start, ax1.get_ylim()[1], k.keyword, fontsize=8, va="top")
        if r.trace:
            times = np.array([t for t, *_ in r.trace])
            post = np.stack([p for _, p, _ in r.trace])
            for i, c in enumerate(model.classes):
                if c in model.keywords and post[:, i].max() > 0.05:
                    line, = ax2.plot(times, post[:, i], lw=1, label=c)
                    ax2.axhline(model.thresholds[c], color=line.get_color(), ls=":", lw=0.8)
        for d in r.detections:
            ax2.axvline(d.time, color="red", lw=1)
            ax2.text(d.time, 1.02, f"{d.keyword} {d.confidence:.2f}", fontsize=8, color="red", rotation=20)
        ax2.set_ylim(0, 1.1)
        ax2.set_ylabel("keyword posterior")
        ax2.set_xlabel("call time (s)")
        if ax2.get_legend_handles_labels()[0]:
            ax2.legend(fontsize=7, loc="upper left")
        fig.suptitle(f"{r.file} → services {r.services or 'none'}", fontsize=10)
        fig.tight_layout()
        png = f"call{n:03d}.png"
        fig.savefig(directory / png, dpi=70)
        plt.close(fig)
        rows.append(f"<h3>{html.escape(r.file)}</h3><img src='{png}' alt='timeline of {html.escape(r.file)}'>")
    table = ""
    if metrics is not None:
        s = metrics.summary()
        table = "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{v if not isinstance(v, float) else round(v, 4)}"
                                    f"</td></tr>" for k, v in s.items()) + "</table>"
    page = (f"<!doctype html><meta charset='utf-8'><title>triage replay report</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}th{{text-align:left;padding-right:1em}}</style>"
            f"<h1>triage replay: {len(results)} calls</h1><p>model: {html.escape(str(model.path))}</p>"
            f"{table}{''.join(rows)}")
    out = directory / "index.html"
    out.write_text(page, encoding="utf-8")
    return out
