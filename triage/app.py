"""Wiring for `triage serve` and `triage demo`: model + Redis (embedded or given) + server, until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from triage.embedded_redis import EmbeddedRedis
from triage.model import KeywordModel
from triage.server import ServerConfig, TriageServer
from triage.store import RouteStore

DEFAULT_DATA_DIR = Path(os.environ.get("TRIAGE_DATA_DIR", Path.home() / ".local" / "share" / "triage"))


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def run(config: ServerConfig, model: KeywordModel, redis_url: str | None, data_dir: Path,
              extra: Callable[[TriageServer], Awaitable[None]] | None = None) -> int:
    embedded = None
    if not redis_url:
        embedded = EmbeddedRedis(data_dir / "redis").start()
        redis_url = embedded.url
        say(f"embedded Redis (AOF) on {redis_url}, data in {data_dir / 'redis'}")
    store = RouteStore(redis_url)
    server = TriageServer(model, store, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        base = f"http://{config.host}:{config.port}"
        say(f"triage serving with model {model.path.name}")
        say(f"  dashboard  {base}/" + (f"?token={config.token}" if config.token else ""))
        say(f"  calls      ws://{config.host}:{config.port}/call")
        say(f"  feed       ws://{config.host}:{config.port}/feed")
        say(f"  health     {base}/healthz   metrics {base}/metrics")
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
        say("stopping: ending live calls and flushing routes")
        return 0
    finally:
        await server.stop()
        await store.close()
        if embedded is not None:
            embedded.stop()
