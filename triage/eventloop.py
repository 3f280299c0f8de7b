"""The event loop every triage command runs on: uvloop where it is installed (a dependency on Linux and
macOS), asyncio's own elsewhere, or whichever `TRIAGE_EVENT_LOOP` (uvloop | asyncio) names.

Why: a live call sends 50 websocket frames a second, and receiving one cost the server 49 µs of CPU on
asyncio's loop against 23–29 µs on uvloop; through the whole server at 100 calls, uvloop took 8–12 % off
the CPU per second of call (BENCHMARKS.md, session 23). The variable is there to measure that, and to fall
back should uvloop ever misbehave somewhere.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
ENV = "TRIAGE_EVENT_LOOP"


class EventLoopError(RuntimeError):
    """TRIAGE_EVENT_LOOP names a loop that cannot be had."""


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop, or None for asyncio's own."""
    wanted = os.environ.get(ENV, "").strip().lower()
    if wanted not in ("", "uvloop", "asyncio"):
        raise EventLoopError(f"{ENV}={os.environ[ENV]!r}: expected uvloop or asyncio")
    if wanted == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if wanted == "uvloop":
            raise EventLoopError(f"{ENV}=uvloop, but uvloop is not installed (pip install uvloop)") from None
        return None
    return uvloop.new_event_loop


def chosen() -> str:
    """The name of the loop `run` uses here: "uvloop" or "asyncio"."""
    return "asyncio" if loop_factory() is None else "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on the loop above."""
    try:
        factory = loop_factory()
    except EventLoopError:
        main.close()  # never to run: no "coroutine was never awaited" on top of the error
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
