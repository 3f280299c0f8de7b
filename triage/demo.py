"""The demo: bundled synthetic calls (triage/demo_calls/*.wav) sent to a running service, in a loop."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from triage import client
from triage.credentials import CredentialFile, Credentials, new_token

CALLS_DIR = Path(__file__).parent / "demo_calls"


def demo_calls() -> list[Path]:
    calls = sorted(CALLS_DIR.glob("*.wav"))
    if not calls:
        raise client.CallFailed(f"no demo calls in {CALLS_DIR}")
    return calls


def demo_credentials(users_path: Path) -> tuple[str, str]:
    """Fresh credentials for one demo run: an ingest token for the demo calls, and a dispatcher `demo`
    (in `users_path`) for the dashboard. Returns (ingest token, dispatcher token)."""
    file = CredentialFile(users_path)
    creds = Credentials()
    dispatcher = creds.add("demo", "dispatcher", time.time())
    file.save(creds.users)
    return new_token(), dispatcher


async def loop_demo_calls(url: str, token: str | None, rounds: int = 0, stagger_s: float = 4.0,
                          cafile: str | None = None) -> None:
    """Play every demo call, a few seconds apart so that several are live at once; `rounds`=0 loops forever."""
    calls = demo_calls()
    n = 0
    while rounds == 0 or n < rounds:
        n += 1
        tasks = []
        for i, path in enumerate(calls):
            samples, rate = client.load_audio(str(path))
            data, width = client.prepare(samples, rate, "mulaw", 8000)
            meta = {"caller": f"démo {i + 1}", "source": path.name}

            def show(ev, name=path.name):
                if ev.get("type") == "route":
                    print(f"{name}: routed to {' + '.join(map(str, ev['services']))}", file=sys.stderr, flush=True)

            tasks.append(asyncio.create_task(client.stream_call(url, data, width, 8000, "mulaw", metadata=meta,
                                                                token=token, cafile=cafile, on_event=show)))
            await asyncio.sleep(stagger_s)
        await asyncio.gather(*tasks)
