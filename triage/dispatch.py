"""`triage dispatch`: a terminal console on a service's queue (the same store API as the dashboard)."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys

from triage.keywords import SERVICE_BY_NUMBER
from triage.store import DEFAULT_PREFIX, RouteStore, StoreError


async def _ask(prompt: str) -> str:
    return (await asyncio.to_thread(input, prompt)).strip().lower()


async def console(url: str, service: int, name: str | None = None, key_prefix: str = DEFAULT_PREFIX) -> int:
    who = name or getpass.getuser()
    store = RouteStore(url, prefix=key_prefix)
    label = f"{service} {SERVICE_BY_NUMBER[service].name}"
    try:
        await store.ensure_groups()
        print(f"dispatcher {who} on {label}; Ctrl-C to leave", file=sys.stderr)
        while True:
            entry = await store.next_for(service, who)
            if entry is None:
                await asyncio.sleep(1.0)
                continue
            evidence = json.loads(entry.fields.get("evidence", "[]"))
            meta = json.loads(entry.fields.get("metadata", "{}") or "{}")
            print(f"\ncall {entry.call_id}  {meta}")
            for e in evidence:
                if "keyword" in e:
                    print(f"  heard « {e['keyword']} » at {e['time']:.1f} s (confidence {e['confidence']:.2f})")
            while True:
                answer = await _ask("[a]cknowledge, re-route to [15/17/18], [w]rong detection: ")
                try:
                    if answer == "a":
                        await store.ack(entry.call_id, service, who)
                        print("acknowledged")
                        break
                    if answer.isdigit():
                        await store.reroute(entry.call_id, service, int(answer), who)
                        print(f"re-routed to {answer}")
                        break
                    if answer == "w" and evidence:
                        e = evidence[0]
                        await store.mark_wrong(entry.call_id, e["keyword"], e["time"], who, service)
                        print("marked wrong; now acknowledge or re-route")
                except StoreError as e:
                    print(f"not done: {e}", file=sys.stderr)
    except (KeyboardInterrupt, EOFError):
        return 0
    finally:
        await store.close()
