"""Opt-in call recording (`triage serve --record DIR`): each call's audio as it arrived, its events and the
dispatchers' feedback, kept for a retention period, deleted on request.

    DIR/<call_id>/call.json              the call: sample rate, encoding, metadata, model, start time
    DIR/<call_id>/audio-<offset>.wav     the line's own encoding (G.711 stays G.711); a call resumed after a
                                         restart or on another worker goes on in a new segment that starts
                                         at its sample offset in the call
    DIR/<call_id>/events.jsonl           detections, routes, the summary and feedback, one JSON object a line

Several server processes on one machine share DIR: each writes the segments of the calls it holds,
and events are whole lines appended to one file. This is an I/O adapter; nothing here decides.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from triage.audio import AudioError, AudioFile, LineRecorder, write_wav
from triage.protocol import CALL_ID

log = logging.getLogger("triage.recording")
SEGMENT = re.compile(r"^audio-(\d{12})(?:-(\d+))?\.wav$")


class RecordingError(RuntimeError):
    """A recording that is not there or cannot be read; the message names the call and the file."""


@dataclass(frozen=True)
class CallInfo:
    call_id: str
    sample_rate: int
    encoding: str
    started_at: float
    metadata: dict
    model: str


class Recordings:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._writers: dict[str, tuple[LineRecorder, Path]] = {}

    def _dir(self, call_id: str) -> Path:
        if not CALL_ID.fullmatch(call_id):  # ids come from callers: never a path of their choosing
            raise RecordingError(f"{call_id[:80]!r} is not a call id")
        return self.root / call_id

    # -- writing (the server) ----------------------------------------------------------------------
    def open(self, info: CallInfo, offset: int) -> None:
        """Start (or, for a resumed call, continue) recording a call at sample `offset` of the call."""
        d = self._dir(info.call_id)
        d.mkdir(exist_ok=True)
        meta = d / "call.json"
        if not meta.exists():
            meta.write_text(json.dumps(info.__dict__, ensure_ascii=False) + "\n", encoding="utf-8")
        self.close(info.call_id)
        path, n = d / f"audio-{offset:012d}.wav", 1
        while path.exists():  # the same offset again (a resume replaying audio): a new segment beside it
            n += 1
            path = d / f"audio-{offset:012d}-{n}.wav"
        self._writers[info.call_id] = (LineRecorder(path, info.sample_rate, info.encoding), path)

    def write(self, call_id: str, data: bytes) -> None:
        writer = self._writers.get(call_id)
        if writer is not None and data:
            writer[0].write(data)

    def close(self, call_id: str) -> None:
        writer = self._writers.pop(call_id, None)
        if writer is not None:
            writer[0].close()

    def is_recording(self, call_id: str) -> bool:
        return call_id in self._writers

    def event(self, call_id: str, event: dict) -> None:
        """Append an event to a recorded call's log; calls that are not recorded are left alone."""
        d = self.root / call_id
        if CALL_ID.fullmatch(call_id) and (d / "call.json").exists():
            with open(d / "events.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(event, ensure_ascii=False) + "\n")

    # -- reading ----------------------------------------------------------------------------------
    def calls(self) -> list[CallInfo]:
        out = []
        for meta in sorted(self.root.glob("*/call.json")):
            try:
                out.append(CallInfo(**json.loads(meta.read_text(encoding="utf-8"))))
            except (ValueError, TypeError) as e:
                log.warning("%s: unreadable recording metadata (%s), skipped", meta, e)
        return out

    def info(self, call_id: str) -> CallInfo:
        meta = self._dir(call_id) / "call.json"
        try:
            return CallInfo(**json.loads(meta.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise RecordingError(f"no recording of call {call_id!r} in {self.root}") from None
        except (ValueError, TypeError) as e:
            raise RecordingError(f"{meta}: unreadable recording metadata ({e})") from None

    def events(self, call_id: str) -> list[dict]:
        path = self._dir(call_id) / "events.jsonl"
        if not path.exists():
            return []
        out = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                out.append(json.loads(line))
            except ValueError:
                log.warning("%s:%d: not JSON, skipped", path, n)
        return out

    def _segments(self, call_id: str) -> list[tuple[int, int, Path, int]]:
        """(offset in the call, order, path, samples) of each non-empty segment, in writing order."""
        self.info(call_id)  # a call with no metadata is not a recording
        out = []
        for path in self._dir(call_id).glob("audio-*.wav"):
            m = SEGMENT.match(path.name)
            if m is None:
                continue
            try:
                with AudioFile(path) as f:
                    frames = f.frames
            except AudioError as e:
                if "no audio samples" in str(e):
                    continue  # opened, then the line went quiet
                raise RecordingError(str(e)) from None
            out.append((int(m.group(1)), int(m.group(2) or 1), path, frames))
        if not out:
            raise RecordingError(f"recording of call {call_id!r} has no audio ({self._dir(call_id)})")
        return sorted(out, key=lambda s: (s[0], s[1]))

    def duration(self, call_id: str) -> float:
        return max(off + n for off, _, _, n in self._segments(call_id)) / self.info(call_id).sample_rate

    def audio(self, call_id: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples [start, stop) of the call as float32 at its line rate, reading only what is asked for.
        Gaps between segments are silence; where a resumed call sent audio again, the later segment wins."""
        segments = self._segments(call_id)
        total = max(off + n for off, _, _, n in segments)
        stop = total if stop is None else min(stop, total)
        out = np.zeros(max(0, stop - start), dtype=np.float32)
        for off, _, path, n in segments:
            a, b = max(start, off), min(stop, off + n)
            if a >= b:
                continue
            try:
                with AudioFile(path) as f:
                    out[a - start: b - start] = f.read_range(a - off, b - a)
            except AudioError as e:
                raise RecordingError(str(e)) from None
        return out

    def clip(self, call_id: str, start: float, end: float) -> bytes:
        """A stretch of the call as a PCM16 WAV file a browser plays (G.711 WAV it does not)."""
        rate = self.info(call_id).sample_rate
        x = self.audio(call_id, max(0, int(start * rate)), max(0, int(end * rate)))
        if len(x) == 0:
            raise RecordingError(f"call {call_id!r} has no audio between {start:.1f} s and {end:.1f} s "
                                 f"(it lasts {self.duration(call_id):.1f} s)")
        buf = io.BytesIO()
        write_wav(buf, x, rate, "pcm_s16le")
        return buf.getvalue()

    def export_audio(self, call_id: str, path: Path) -> None:
        """The call as one WAV file in its line's encoding."""
        info = self.info(call_id)
        write_wav(path, self.audio(call_id), info.sample_rate, info.encoding)

    # -- deleting ---------------------------------------------------------------------------------
    def purge(self, call_id: str) -> bool:
        """Delete a call's recording (a deletion request); False if there was none."""
        d = self._dir(call_id)
        if not d.exists():
            return False
        self.close(call_id)
        shutil.rmtree(d)
        return True

    def expired(self, now: float, retention_days: float, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Calls that started more than `retention_days` before `now`, except those in `keep` (live)."""
        limit = now - retention_days * 86_400
        return [c.call_id for c in self.calls() if c.started_at < limit and c.call_id not in keep]

    def purge_expired(self, retention_days: float, keep: set[str] | frozenset[str] = frozenset(),
                      now: float | None = None) -> list[str]:
        gone = self.expired(time.time() if now is None else now, retention_days, keep)
        for call_id in gone:
            self.purge(call_id)
        return gone

    def size_bytes(self) -> int:
        return sum(os.path.getsize(p) for p in self.root.rglob("*") if p.is_file())
