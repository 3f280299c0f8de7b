"""Wiring for `triage serve` and `triage demo`: model + Redis (embedded or given) + server, until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from triage import eventloop
from triage.embedded_redis import EmbeddedRedis
from triage.model import KeywordModel
from triage.server import ServerConfig, TriageServer
from triage.store import RouteStore

DEFAULT_DATA_DIR = Path(os.environ.get("TRIAGE_DATA_DIR", Path.home() / ".local" / "share" / "triage"))


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def run(config: ServerConfig, model: KeywordModel, redis_url: str | None, data_dir: Path,
              extra: Callable[[TriageServer], Awaitable[None]] | None = None, announce: bool = True,
              dashboard_token: str | None = None) -> int:
    redis_url, embedded = _redis(redis_url, data_dir)
    store = RouteStore(redis_url, prefix=config.key_prefix)
    server = TriageServer(model, store, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task] = set()

    def reload() -> None:  # SIGHUP: the promoted model file is read again, live calls go on
        task = asyncio.ensure_future(server.reload_model())
        reloads.add(task)
        task.add_done_callback(reloads.discard)
    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await server.start()
        if announce:
            _announce(config, model.path, dashboard_token=dashboard_token)
        tasks = [asyncio.create_task(stop.wait())]
        if extra is not None:
            tasks.append(asyncio.create_task(extra(server)))
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for t in done:
            if t.exception():
                raise t.exception()
        if announce:
            say("stopping: ending live calls and flushing routes")
        return 0
    finally:
        await server.stop()
        await store.close()
        if embedded is not None:
            embedded.stop()


def _redis(redis_url: str | None, data_dir: Path) -> tuple[str, EmbeddedRedis | None]:
    """The Redis to use: the given URL, or an embedded server started in `data_dir` (stop it after)."""
    if redis_url:
        return redis_url, None
    embedded = EmbeddedRedis(data_dir / "redis").start()
    say(f"embedded Redis (AOF) on {embedded.url}, data in {data_dir / 'redis'}")
    return embedded.url, embedded


def _announce(config: ServerConfig, model_path: Path, workers: int = 1, dashboard_token: str | None = None) -> None:
    tls = "s" if config.certfile else ""
    base, ws = f"http{tls}://{config.host}:{config.port}", f"ws{tls}://{config.host}:{config.port}"
    say(f"triage serving with model {model_path.name}" + (f" in {workers} worker processes" if workers > 1 else ""))
    if dashboard_token:
        say(f"  dashboard  {base}/?token={dashboard_token}   (dispatcher 'demo', made for this run)")
    else:
        say(f"  dashboard  {base}/" + ("   (asks for a dispatcher credential: triage users add NAME)"
                                       if config.token or config.users_file else ""))
    say(f"  calls      {ws}/call" + (f"   (ingest token {config.token})" if dashboard_token else ""))
    say(f"  feed       {ws}/feed")
    say(f"  health     {base}/healthz   metrics {base}/metrics" + ("  (all workers)" if workers > 1 else ""))


def _worker_main(config: ServerConfig, model_path: Path, redis_url: str, data_dir: Path) -> None:
    import ctypes

    # Die with the supervisor, however it dies: an orphan worker would keep serving the port unseen.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        return
    # A reload asked for while this worker is still loading must not kill it (SIGHUP's default): it is
    # loading the newest model file anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        sys.exit(eventloop.run(run(config, KeywordModel(model_path), redis_url, data_dir, announce=False)))
    except RuntimeError as e:
        say(f"worker {config.instance}: {e}")
        sys.exit(1)


def serve_workers(config: ServerConfig, model: KeywordModel, redis_url: str | None, data_dir: Path,
                  workers: int) -> int:
    """N worker processes on one port (SO_REUSEPORT: the kernel spreads connections), one Redis.

    A worker that dies is restarted; its callers reconnect and resume on whichever worker accepts them
    (the new worker reads the call's routes from Redis, so none is added twice). SIGINT/SIGTERM stop
    every worker gracefully: live calls get their summary, routes are flushed.
    """
    import multiprocessing as mp
    import shutil
    import tempfile
    import time

    from triage.embedded_redis import free_port
    from triage.metrics import MULTIPROC_ENV, worker_exited

    redis_url, embedded = _redis(redis_url, data_dir)
    if config.port == 0:
        config.port = free_port(config.host)
    ctx = mp.get_context("spawn")
    stopping = False
    procs: list = []
    # Every worker writes its metrics here and any worker's /metrics sums them (triage/metrics.py).
    # A directory the operator chose is theirs to keep; ours goes when the server stops.
    own_metrics_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        own_metrics_dir = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="triage-metrics-")

    def start(i: int):
        p = ctx.Process(target=_worker_main, name=f"triage-worker-{i}", daemon=False,
                        args=(replace(config, reuse_port=True, instance=f"{config.instance}-w{i}"), model.path,
                              redis_url, data_dir))
        p.start()
        return p

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    def on_hangup(signum, frame):  # reload the model in every worker
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGHUP)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    old[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
    procs.extend(start(i) for i in range(workers))
    try:
        _wait_healthy(config, procs)
        _announce(config, model.path, workers)
        while not stopping:
            time.sleep(0.2)
            for i, p in enumerate(procs):
                if not p.is_alive() and not stopping:
                    say(f"worker {i} exited with {p.exitcode}; restarting it")
                    worker_exited(p.pid)
                    procs[i] = start(i)
        say("stopping: ending live calls and flushing routes")
        return 0
    finally:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(15)
            if p.is_alive():
                p.kill()
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if own_metrics_dir is not None:
            del os.environ[MULTIPROC_ENV]
            shutil.rmtree(own_metrics_dir, ignore_errors=True)
        if embedded is not None:
            embedded.stop()


def _wait_healthy(config: ServerConfig, procs, timeout: float = 60.0) -> None:
    """Until every worker has answered /healthz: the port answers as soon as the first one listens, and
    "serving in N worker processes" must not be said while the others are still loading their model."""
    import json
    import time
    import urllib.request

    scheme, tls = "http", None
    if config.certfile:  # our own workers on this machine: the probe need not verify their certificate
        import ssl

        scheme, tls = "https", ssl._create_unverified_context()
    deadline = time.monotonic() + timeout
    answered: set[int] = set()
    while time.monotonic() < deadline:
        if any(not p.is_alive() for p in procs):
            raise RuntimeError("a worker process failed to start (see its message above)")
        try:
            with urllib.request.urlopen(f"{scheme}://{config.host}:{config.port}/healthz", timeout=1,
                                        context=tls) as r:
                answered.add(json.loads(r.read())["pid"])  # each probe lands on a worker the kernel picks
        except OSError:
            time.sleep(0.1)
            continue
        if {p.pid for p in procs} <= answered:
            return
        time.sleep(0.01)
    raise RuntimeError(f"workers not all answering on {config.host}:{config.port} after {timeout:g} s "
                       f"({len(answered)} of {len(procs)} did)")
