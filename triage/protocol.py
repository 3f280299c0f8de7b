"""The websocket messages of `/call` and `/feed`: parse and validate, or raise ProtocolError.

Pure: strings and bytes in, typed messages out. See docs/protocol.md for the exchange with examples.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import uuid
from dataclasses import dataclass, field

from triage.audio import ENCODINGS
from triage.keywords import KEYWORD_SERVICE, SERVICE_BY_NUMBER

SAMPLE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
CALL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
MAX_METADATA_FIELDS = 20
MAX_METADATA_VALUE = 200

# Close codes (RFC 6455 §7.4 and the private 4000–4999 range).
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_SERVER_ERROR = 1011
CLOSE_TRY_AGAIN = 1013
CLOSE_IDLE = 4000
CLOSE_TAKEN_OVER = 4001  # the call was resumed on a newer connection


class ProtocolError(ValueError):
    """A message the server cannot accept. `code` is machine-readable, `detail` says what was expected."""

    def __init__(self, code: str, detail: str, close_code: int = CLOSE_PROTOCOL_ERROR):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.close_code = close_code

    def to_event(self) -> dict:
        return {"type": "error", "code": self.code, "message": self.detail}


@dataclass(frozen=True)
class Start:
    call_id: str
    sample_rate: int
    encoding: str
    metadata: dict = field(default_factory=dict)
    id_given: bool = True


@dataclass(frozen=True)
class Stop:
    pass


def _load(text: str) -> dict:
    try:
        msg = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ProtocolError("bad_json", f"text frames must be JSON objects ({e})", CLOSE_UNSUPPORTED_DATA) from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_message", f"expected a JSON object, got {type(msg).__name__}")
    return msg


def _metadata(value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError("bad_field", "metadata must be an object of short strings or numbers")
    if len(value) > MAX_METADATA_FIELDS:
        raise ProtocolError("bad_field", f"metadata has {len(value)} fields, at most {MAX_METADATA_FIELDS}")
    out = {}
    for k, v in value.items():
        if not isinstance(v, str | int | float) or isinstance(v, bool) or len(str(k)) > 64:
            raise ProtocolError("bad_field", f"metadata field {str(k)[:64]!r} must be a string or a number")
        if len(str(v)) > MAX_METADATA_VALUE:
            raise ProtocolError("bad_field", f"metadata field {k!r} is longer than {MAX_METADATA_VALUE} characters")
        out[str(k)] = v
    return out


def parse_client_text(text: str) -> Start | Stop:
    """A text frame from a caller: `start` or `stop`."""
    msg = _load(text)
    kind = msg.get("type")
    if kind == "stop":
        return Stop()
    if kind != "start":
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}; expected 'start' or 'stop'")
    call_id = msg.get("call_id")
    given = call_id is not None
    if call_id is None:
        call_id = uuid.uuid4().hex
    if not isinstance(call_id, str) or not CALL_ID.fullmatch(call_id):
        raise ProtocolError("bad_field", "call_id must be 1-64 characters: letters, digits, _ . : - "
                                         f"(got {str(call_id)[:80]!r})")
    rate = msg.get("sample_rate")
    if not isinstance(rate, int) or isinstance(rate, bool) or rate not in SAMPLE_RATES:
        raise ProtocolError("bad_sample_rate", f"sample_rate must be one of {', '.join(map(str, SAMPLE_RATES))} "
                                               f"(got {rate!r})")
    encoding = msg.get("encoding")
    if encoding not in ENCODINGS:
        raise ProtocolError("bad_encoding", f"encoding must be one of {', '.join(ENCODINGS)} (got {encoding!r})")
    unknown = set(msg) - {"type", "call_id", "sample_rate", "encoding", "metadata"}
    if unknown:
        raise ProtocolError("bad_field", f"unknown fields {sorted(unknown)} in start")
    return Start(call_id, rate, encoding, _metadata(msg.get("metadata")), given)


# confirm: the route this card shows is right (and so are the detections not marked wrong);
# missed: a keyword the caller said that the model did not detect, at about this time in the call.
DISPATCH_ACTIONS = ("claim", "ack", "reroute", "wrong", "confirm", "missed")


@dataclass(frozen=True)
class DispatchAction:
    """A dashboard's action on one call's entry in one service's queue."""
    action: str
    call_id: str
    service: int
    dispatcher: str = ""  # what the dashboard typed; only an open server uses it
    to_service: int | None = None  # reroute
    keyword: str | None = None  # wrong: the detection rejected; missed: the keyword not detected
    time: float | None = None  # in call seconds: the detection's (wrong), about when it was said (missed)


def _service(msg: dict, key: str) -> int:
    value = msg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value not in SERVICE_BY_NUMBER:
        raise ProtocolError("bad_action", f"{key} must be one of {', '.join(map(str, SERVICE_BY_NUMBER))} "
                                          f"(got {str(value)[:40]!r})")
    return value


def parse_action(text: str) -> DispatchAction:
    """A text frame from a dashboard; every field checked before anything reaches Redis."""
    try:
        msg = _load(text)
    except ProtocolError as e:
        raise ProtocolError("bad_action", e.detail) from None
    action = msg.get("type")
    if action not in DISPATCH_ACTIONS:
        raise ProtocolError("bad_action", f"unknown action {str(action)[:40]!r}; expected one of "
                                          f"{', '.join(DISPATCH_ACTIONS)}")
    call_id = msg.get("call_id")
    if not isinstance(call_id, str) or not CALL_ID.fullmatch(call_id):
        raise ProtocolError("bad_action", f"call_id must be a call id (got {str(call_id)[:80]!r})")
    service = _service(msg, "service")
    who = msg.get("dispatcher", "")
    if not isinstance(who, str) or len(who) > 64:
        raise ProtocolError("bad_action", "dispatcher must be a name of at most 64 characters")
    out = DispatchAction(action, call_id, service, who.strip())
    if action == "reroute":
        to = _service(msg, "to_service")
        if to == service:
            raise ProtocolError("bad_action", f"to_service must differ from service {service}")
        return dataclasses.replace(out, to_service=to)
    if action in ("wrong", "missed"):
        keyword, at = msg.get("keyword"), msg.get("time")
        if not isinstance(keyword, str) or keyword not in KEYWORD_SERVICE:  # a list or object is unhashable
            raise ProtocolError("bad_action", f"keyword must be a triage keyword (got {str(keyword)[:40]!r})")
        if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at) or at < 0:
            raise ProtocolError("bad_action", f"time must be a non-negative number of seconds (got {str(at)[:40]!r})")
        return dataclasses.replace(out, keyword=keyword, time=float(at))
    return out


def bytes_per_sample(encoding: str) -> int:
    return {"pcm_s16le": 2, "f32le": 4, "mulaw": 1, "alaw": 1}[encoding]


def check_audio_frame(data: bytes, start: Start | None) -> None:
    """A binary frame: it needs a `start` first and whole samples."""
    if start is None:
        raise ProtocolError("audio_before_start", "send a JSON 'start' message before any audio")
    n = bytes_per_sample(start.encoding)
    if len(data) % n:
        raise ProtocolError("bad_audio", f"{start.encoding} frames need a multiple of {n} bytes, got {len(data)}",
                            CLOSE_UNSUPPORTED_DATA)


def event(kind: str, call_id: str, **fields) -> str:
    return json.dumps({"type": kind, "call_id": call_id, **fields}, ensure_ascii=False)
