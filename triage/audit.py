"""The audit log's daily export: `triage:audit` (every model decision and every dispatcher action, never
trimmed) copied to one JSON-lines file per UTC day, which a centre archives as its record of what the
system suggested and what people decided.

Stream ids start with the entry's time in milliseconds, so a day is an id range; `day_range` is pure.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

DAY_MS = 86_400_000


def day_range(day: dt.date) -> tuple[str, str]:
    """The stream ids of one UTC day, inclusive."""
    start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
    return f"{start}-0", f"{start + DAY_MS - 1}-{2**64 - 1}"


def day_of(entry_id: str) -> dt.date:
    return dt.datetime.fromtimestamp(int(entry_id.split("-")[0]) / 1000, dt.UTC).date()


def file_for(directory: Path, day: dt.date) -> Path:
    return directory / f"audit-{day.isoformat()}.jsonl"


async def export_day(store, day: dt.date, directory: Path) -> tuple[Path, int]:
    """Write one day's audit entries (oldest first, each with its stream id) to DIR/audit-DAY.jsonl,
    atomically: a reader never sees half a day."""
    directory.mkdir(parents=True, exist_ok=True)
    path = file_for(directory, day)
    tmp = path.with_suffix(f".jsonl.{os.getpid()}.tmp")  # workers of one server may export the same day
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for entry_id, fields in await store.audit_entries(*day_range(day)):
            f.write(json.dumps({"id": entry_id, **fields}, ensure_ascii=False) + "\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path, n


async def export_finished_days(store, directory: Path, today: dt.date) -> list[tuple[Path, int]]:
    """Every day before `today` that has audit entries and no export yet (the server runs this hourly)."""
    first = await store.redis.xrange(store.audit_key, count=1)
    if not first:
        return []
    done = []
    day = day_of(first[0][0])
    while day < today:
        if not file_for(directory, day).exists():
            done.append(await export_day(store, day, directory))
        day += dt.timedelta(days=1)
    return done
