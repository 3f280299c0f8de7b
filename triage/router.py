"""CallRouter: one per call, sans-I/O. Keyword detections in, a RouteDecision out.

A call goes to every service one of its keywords was heard for, in the order the evidence came
(a fire with a casualty goes to 18 and 15). The decision only changes on new evidence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from triage.spotter import Detection


@dataclass(frozen=True)
class Evidence:
    keyword: str
    time: float
    confidence: float


@dataclass(frozen=True)
class RouteDecision:
    services: tuple[int, ...]  # in order of first evidence
    evidence: dict[int, tuple[Evidence, ...]] = field(default_factory=dict)
    version: int = 0  # increases each time the decision changes
    changed_at: float | None = None  # call time of the detection that changed it

    def first_time(self, service: int) -> float:
        return self.evidence[service][0].time

    def confidence(self, service: int) -> float:
        return max(e.confidence for e in self.evidence[service])

    @property
    def keywords(self) -> dict[int, list[str]]:
        return {s: sorted({e.keyword for e in self.evidence[s]}) for s in self.services}

    def to_dict(self) -> dict:
        return {
            "services": list(self.services),
            "version": self.version,
            "changed_at": self.changed_at,
            "evidence": {str(s): [{"keyword": e.keyword, "time": round(e.time, 3),
                                   "confidence": round(e.confidence, 4)} for e in self.evidence[s]]
                         for s in self.services},
        }


class CallRouter:
    def __init__(self) -> None:
        self.decision = RouteDecision(services=())

    def update(self, detections: Iterable[Detection]) -> RouteDecision | None:
        """Take new detections; return the new decision if the set of services changed, else None.

        Evidence for an already-routed service is recorded (it raises confidence and shows on the
        dashboard) but is not a route change.
        """
        services = list(self.decision.services)
        evidence = {s: list(v) for s, v in self.decision.evidence.items()}
        changed_at = None
        for d in sorted(detections, key=lambda d: d.time):
            if d.service not in evidence:
                services.append(d.service)
                evidence[d.service] = []
                changed_at = changed_at if changed_at is not None else d.time
            evidence[d.service].append(Evidence(d.keyword, d.time, d.confidence))
        if not evidence:
            return None
        changed = changed_at is not None
        self.decision = RouteDecision(
            services=tuple(services),
            evidence={s: tuple(v) for s, v in evidence.items()},
            version=self.decision.version + (1 if changed else 0),
            changed_at=changed_at if changed else self.decision.changed_at,
        )
        return self.decision if changed else None

    @property
    def sorted_services(self) -> list[int]:
        return sorted(self.decision.services)
