"""What dispatchers said of the model's work, turned into measurement. Sans-I/O.

Input: the entries of `triage:feedback` (confirm, missed, wrong_detection, reroute) and of `triage:audit`
(the model's detections and routes), plus each call's duration. A call is *reviewed* once a dispatcher
gave any feedback on it; only reviewed calls are measured, since for the others nobody knows the truth.

In a reviewed call:
- a detection is correct unless a dispatcher marked it wrong;
- the call's true services are those confirmed, those it was re-routed to, and those of keywords a
  dispatcher said the model missed;
- a missed keyword was said at about the time the dispatcher gave (they point at a timeline, so the
  label spans ±MISSED_SPAN_S around it).

From these come per-keyword and per-service precision and recall, false alarms per hour, the time to
the first correct route, per model version (the trend) and overall; and labels in exactly the format
`triage replay --labels` reads, so a centre measures triage on its own recorded calls.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from triage.keywords import KEYWORD_SERVICE, SERVICE_BY_NUMBER

MISSED_SPAN_S = 1.0


@dataclass
class ReviewedCall:
    call_id: str
    model: str
    duration: float  # seconds of audio (0 when unknown)
    detections: list[tuple[str, float, float]] = field(default_factory=list)  # keyword, time, confidence
    routes: list[tuple[float, tuple[int, ...]]] = field(default_factory=list)  # decision time, services
    confirmed: set[int] = field(default_factory=set)
    rerouted_from: set[int] = field(default_factory=set)
    rerouted_to: set[int] = field(default_factory=set)
    wrong: set[tuple[str, float]] = field(default_factory=set)  # (keyword, detection time rounded to ms)
    missed: list[tuple[str, float]] = field(default_factory=list)
    reviewers: set[str] = field(default_factory=set)

    def is_wrong(self, keyword: str, at: float) -> bool:
        return (keyword, round(at, 3)) in self.wrong

    @property
    def correct_detections(self) -> list[tuple[str, float, float]]:
        return [d for d in self.detections if not self.is_wrong(d[0], d[1])]

    @property
    def routed(self) -> set[int]:
        """What the model routed the call to (not what dispatchers re-routed it to)."""
        return {s for _, services in self.routes for s in services}

    @property
    def true_services(self) -> set[int]:
        return self.confirmed | self.rerouted_to | {KEYWORD_SERVICE[k] for k, _ in self.missed}

    def first_correct_route(self) -> float | None:
        """Call time of the first route decision that included a true service."""
        truth = self.true_services
        times = [t for t, services in self.routes if truth & set(services)]
        return min(times) if times else None


def reviewed_calls(feedback: list[dict], audit: list[dict], durations: dict[str, float]) -> list[ReviewedCall]:
    """Feedback and audit entries (stream field dicts, oldest first) → the reviewed calls, by first review."""
    calls: dict[str, ReviewedCall] = {}
    for f in feedback:
        c = calls.get(f["call_id"])
        if c is None:
            c = calls[f["call_id"]] = ReviewedCall(f["call_id"], f.get("model") or "unknown",
                                                   float(durations.get(f["call_id"], 0.0)))
        c.reviewers.add(f.get("dispatcher", ""))
        action, service = f["action"], int(f.get("service") or 0)
        if action == "confirm":
            c.confirmed.add(service)
        elif action == "reroute":
            c.rerouted_from.add(service)
            c.rerouted_to.add(int(f["to_service"]))
        elif action == "wrong_detection":
            c.wrong.add((f["keyword"], round(float(f["detection_time"]), 3)))
        elif action == "missed":
            c.missed.append((f["keyword"], float(f["said_at"])))
    for a in audit:
        c = calls.get(a.get("call_id", ""))
        if c is None or a.get("kind") not in ("detection", "route"):
            continue
        ev = json.loads(a["event"])
        if a["kind"] == "detection":
            c.detections.append((ev["keyword"], float(ev["time"]), float(ev["confidence"])))
        else:
            c.routes.append((float(ev.get("changed_at") or 0.0), tuple(int(s) for s in ev["services"])))
        if c.model == "unknown":
            c.model = a.get("model") or "unknown"
    # A confirmed route is a true one, and re-routing a call away says its service was wrong.
    for c in calls.values():
        c.confirmed -= c.rerouted_from
    return list(calls.values())


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def measure(calls: list[ReviewedCall]) -> dict:
    """Precision, recall, false alarms per hour and time to the first correct route over some calls."""
    per_kw: dict[str, dict[str, int]] = {k: {"detections": 0, "correct": 0, "wrong": 0, "missed": 0}
                                         for k in KEYWORD_SERVICE}
    per_service = {s: {"routed": 0, "true": 0, "both": 0} for s in SERVICE_BY_NUMBER}
    first_routes, wrong = [], 0
    for c in calls:
        for k, t, _ in c.detections:
            per_kw[k]["detections"] += 1
            bad = c.is_wrong(k, t)
            per_kw[k]["wrong" if bad else "correct"] += 1
            wrong += bad
        for k, _ in c.missed:
            per_kw[k]["missed"] += 1
        routed, truth = c.routed, c.true_services
        for s in per_service:
            per_service[s]["routed"] += s in routed
            per_service[s]["true"] += s in truth
            per_service[s]["both"] += s in routed and s in truth
        t = c.first_correct_route()
        if t is not None:
            first_routes.append(t)
    hours = sum(c.duration for c in calls) / 3600
    return {
        "calls": len(calls),
        "hours": round(hours, 4),
        "route_exact_match": _ratio(sum(c.routed == c.true_services for c in calls), len(calls)),
        "false_alarms": wrong,
        "false_alarms_per_hour": round(wrong / hours, 3) if hours else None,
        "time_to_first_correct_route_s": {
            "calls": len(first_routes),
            "median": round(float(np.median(first_routes)), 3) if first_routes else None,
            "p95": round(float(np.percentile(first_routes, 95)), 3) if first_routes else None},
        "per_keyword": {k: {**v, "precision": _ratio(v["correct"], v["detections"]),
                            "recall": _ratio(v["correct"], v["correct"] + v["missed"])}
                        for k, v in per_kw.items()},
        "per_service": {str(s): {**v, "precision": _ratio(v["both"], v["routed"]),
                                 "recall": _ratio(v["both"], v["true"])} for s, v in per_service.items()},
    }


def report(calls: list[ReviewedCall]) -> dict:
    """Overall, and per model version in the order the versions were first reviewed (the trend)."""
    by_model: dict[str, list[ReviewedCall]] = defaultdict(list)
    for c in calls:
        by_model[c.model].append(c)
    return {"overall": measure(calls), "models": {m: measure(cs) for m, cs in by_model.items()},
            "reviewers": sorted({r for c in calls for r in c.reviewers if r})}


def label(c: ReviewedCall, window_s: float, file: str) -> dict:
    """One line of `triage replay --labels`: a correct detection fired after its word ended, within the
    model's window before it; a missed keyword was said around the time the dispatcher pointed at."""
    keywords = [{"keyword": k, "start": round(max(0.0, t - window_s), 3), "end": round(t, 3)}
                for k, t, _ in c.correct_detections]
    keywords += [{"keyword": k, "start": round(max(0.0, t - MISSED_SPAN_S), 3), "end": round(t + MISSED_SPAN_S, 3)}
                 for k, t in c.missed]
    return {"file": file, "services": sorted(c.true_services), "keywords": sorted(keywords, key=lambda k: k["start"]),
            "model": c.model, "reviewed_by": sorted(r for r in c.reviewers if r)}
