"""The service's Prometheus metrics, through prometheus_client. One `ServiceMetrics` per server.

`triage serve --workers N` gives every worker the same `PROMETHEUS_MULTIPROC_DIR` (set before the
workers start, so before they import prometheus_client): each process writes its values there and
any worker's /metrics sums them all. Scoring time, batch size and detection lag are histograms, so
Prometheus can also add up the buckets of several replicas; quantiles computed inside each process
could not be added.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# name (as exposed) → (help, label names)
COUNTERS = {
    "triage_calls_total": ("calls accepted", ()),
    "triage_resumes_total": ("calls resumed after a reconnect", ()),
    "triage_takeovers_total": ("resumes that took a call over from a socket not yet seen dead", ()),
    "triage_disconnects_total": ("calls whose socket closed before the call ended", ()),
    "triage_rejected_total": ("connections refused", ("reason",)),
    "triage_errors_total": ("errors, by code", ("code",)),
    "triage_detections_total": ("keyword detections", ("keyword",)),
    "triage_route_changes_total": ("route decisions published (a call's first route or a change of it)", ()),
    "triage_redis_failures_total": ("Redis writes that failed and were kept to retry", ()),
    "triage_windows_scored_total": ("1 s windows scored by the keyword model", ()),
    "triage_audio_seconds_total": ("call audio decoded, in seconds", ()),
    "triage_chunks_total": ("audio frames received", ()),
    "triage_model_reloads_total": ("models reloaded on SIGHUP", ()),
    "triage_recordings_purged_total": ("recordings removed by the retention policy", ()),
}
# gauge → how worker processes combine (prometheus_client multiprocess modes)
GAUGES = {
    "triage_live_calls": ("calls on this server", "livesum"),
    "triage_feed_clients": ("dashboards connected", "livesum"),
    "triage_redis_up": ("1 when every live worker reaches Redis", "livemin"),
    "triage_outbox_pending": ("Redis writes waiting for Redis", "livesum"),
}


class ServiceMetrics:
    def __init__(self) -> None:
        # Single process: a registry of this server's own (tests run several servers in one process).
        # Multiprocess (None): values live in the shared directory and are collected from there at scrape time.
        self.registry = None if os.environ.get(MULTIPROC_ENV) else CollectorRegistry()
        self._counters = {name: Counter(name.removesuffix("_total"), doc, labels, registry=self.registry)
                          for name, (doc, labels) in COUNTERS.items()}
        self._gauges = {name: Gauge(name, doc, registry=self.registry, multiprocess_mode=mode)
                        for name, (doc, mode) in GAUGES.items()}
        self.scoring_seconds = Histogram(
            "triage_scoring_seconds", "one scoring tick: decode, resample, log-mel and the model, all calls",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0), registry=self.registry)
        self.batch_windows = Histogram(
            "triage_scoring_batch_windows", "windows scored in one model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=self.registry)
        self.detection_lag = Histogram(
            "triage_detection_lag_seconds", "call audio received after the detected window's end, when the "
            "detection is published: how far detections run behind the live call",
            buckets=(0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0), registry=self.registry)

    def inc(self, name: str, by: float = 1.0, **labels) -> None:
        counter = self._counters[name]
        (counter.labels(**labels) if labels else counter).inc(by)

    def value(self, name: str, **labels) -> float:
        """A counter's value in this server (single-process mode: what tests look at)."""
        if self.registry is None:
            raise RuntimeError("per-server values are not kept in multiprocess mode; read /metrics")
        return self.registry.get_sample_value(name, labels) or 0.0

    def set_gauges(self, **values: float) -> None:
        for name, v in values.items():
            self._gauges[f"triage_{name}"].set(v)

    def exposition(self) -> str:
        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry).decode()


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay: totals never go down)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)
