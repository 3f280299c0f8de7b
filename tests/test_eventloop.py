import asyncio
import sys

import pytest

from triage import eventloop


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_commands_run_on_uvloop_where_it_is_installed(monkeypatch):
    monkeypatch.delenv(eventloop.ENV, raising=False)
    # uvloop is a dependency wherever it builds; Linux is where the service runs.
    assert eventloop.run(_loop_module()).startswith("uvloop")


def test_without_uvloop_asyncio_s_own_loop_runs(monkeypatch):
    monkeypatch.delenv(eventloop.ENV, raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert eventloop.loop_factory() is None
    assert eventloop.run(_loop_module()).startswith("asyncio")


def test_the_variable_chooses_the_loop(monkeypatch):
    for name in ("asyncio", "uvloop"):
        monkeypatch.setenv(eventloop.ENV, name)
        assert eventloop.chosen() == name
        assert eventloop.run(_loop_module()).startswith(name)


@pytest.mark.parametrize("value, says", [("tokio", "expected uvloop or asyncio"), ("uvloop", "not installed")])
def test_a_loop_that_cannot_be_had_is_a_clear_error(monkeypatch, value, says):
    monkeypatch.setenv(eventloop.ENV, value)
    monkeypatch.setitem(sys.modules, "uvloop", None)
    with pytest.raises(eventloop.EventLoopError, match=says):
        eventloop.loop_factory()


def test_the_command_line_says_what_is_wrong(monkeypatch, capsys):
    from triage.cli import main

    monkeypatch.setenv(eventloop.ENV, "tokio")
    assert main(["dispatch", "--service", "15", "--redis-url", "redis://127.0.0.1:1"]) == 2
    assert "TRIAGE_EVENT_LOOP='tokio': expected uvloop or asyncio" in capsys.readouterr().err
