import asyncio
import sys

from triage import eventloop


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_commands_run_on_uvloop_where_it_is_installed():
    # uvloop is a dependency wherever it builds; Linux is where the service runs.
    assert eventloop.run(_loop_module()).startswith("uvloop")


def test_without_uvloop_asyncio_s_own_loop_runs(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert eventloop.loop_factory() is None
    assert eventloop.run(_loop_module()).startswith("asyncio")
