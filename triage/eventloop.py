"""The event loop every triage command runs on: uvloop where it is installed (a dependency on Linux and
macOS), asyncio's own elsewhere.

Why: a live call sends 50 websocket frames a second, and receiving one cost the server 49 µs of CPU on
asyncio's loop against 23–29 µs on uvloop (BENCHMARKS.md, session 23): about 1.2 ms of every 9 ms the
server spends per second of call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop, or None (asyncio's default) where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on the loop above."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
