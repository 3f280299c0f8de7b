"""RouteStore: routes in Redis Streams, one queue per service, and the dispatchers' actions on them.

Keys
  triage:queue:<15|17|18>   stream, one entry per (call, service): call_id, service, keywords, evidence, …
  triage:call:<call_id>     hash: call state, metadata, route:<service> → queue entry id, claim/ack fields
  triage:events             stream (capped): every event the dashboards see
  triage:audit              stream (append-only, never trimmed): every model decision (detection, route,
                            with model version and confidence) and every dispatcher action
  triage:feedback           stream: what dispatchers said of the model's work (confirm, missed keyword,
                            wrong detection, re-route) with the model version and the evidence it gave

Every write that must happen once is a Lua script, so it is atomic and idempotent: a route is
added once per (call, service) whatever the retries, reconnects or server restarts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from triage.feedback import ReviewedCall, reviewed_calls
from triage.keywords import SERVICE_BY_NUMBER

SERVICES = tuple(SERVICE_BY_NUMBER)
GROUP = "dispatchers"
# The actions that say something about the model's work; claim and ack only move the queue.
FEEDBACK_ACTIONS = frozenset({"confirm", "missed", "wrong_detection", "reroute"})


DEFAULT_PREFIX = "triage:"
# KEYS: call hash, queue stream. ARGV: service, then the stream entry's field/value pairs.
_ROUTE = """
if redis.call('HEXISTS', KEYS[1], 'route:' .. ARGV[1]) == 1 then
  return false
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('HSET', KEYS[1], 'route:' .. ARGV[1], id, 'state:' .. ARGV[1], 'waiting')
return id
"""

# KEYS: call hash. ARGV: service, dispatcher, now. Returns 'ok', or the reason it was refused.
_CLAIM = """
if redis.call('HEXISTS', KEYS[1], 'route:' .. ARGV[1]) == 0 then return 'not_routed' end
local state = redis.call('HGET', KEYS[1], 'state:' .. ARGV[1])
if state ~= 'waiting' and state ~= 'claimed' then return 'already_' .. state end
local owner = redis.call('HGET', KEYS[1], 'claimed_by:' .. ARGV[1])
if owner and owner ~= ARGV[2] then return 'claimed_by:' .. owner end
redis.call('HSET', KEYS[1], 'state:' .. ARGV[1], 'claimed', 'claimed_by:' .. ARGV[1], ARGV[2],
           'claimed_at:' .. ARGV[1], ARGV[3])
return 'ok'
"""

# KEYS: call hash, queue stream. ARGV: service, dispatcher, now, new state ('acked' | 'rerouted').
_FINISH = """
if redis.call('HEXISTS', KEYS[1], 'route:' .. ARGV[1]) == 0 then return 'not_routed' end
local state = redis.call('HGET', KEYS[1], 'state:' .. ARGV[1])
if state ~= 'claimed' then return 'not_claimed' end
local owner = redis.call('HGET', KEYS[1], 'claimed_by:' .. ARGV[1])
if owner ~= ARGV[2] then return 'claimed_by:' .. owner end
redis.call('HSET', KEYS[1], 'state:' .. ARGV[1], ARGV[4], ARGV[4] .. '_by:' .. ARGV[1], ARGV[2],
           ARGV[4] .. '_at:' .. ARGV[1], ARGV[3])
redis.call('XACK', KEYS[2], 'dispatchers', redis.call('HGET', KEYS[1], 'route:' .. ARGV[1]))
return 'ok'
"""


class StoreError(RuntimeError):
    """A dispatcher action that cannot be done (the message says why), or Redis not reachable."""


@dataclass(frozen=True)
class QueueEntry:
    id: str
    call_id: str
    service: int
    keywords: list[str]
    fields: dict

    @classmethod
    def from_stream(cls, service: int, entry_id, fields: dict) -> QueueEntry:
        f = {_s(k): _s(v) for k, v in fields.items()}
        return cls(_s(entry_id), f["call_id"], service, json.loads(f.get("keywords", "[]")), f)


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class RouteStore:
    def __init__(self, url: str, events_maxlen: int = 10_000, claim_idle_ms: int = 60_000,
                 socket_timeout: float = 2.0, prefix: str = DEFAULT_PREFIX):
        """`prefix` starts every key; on Redis Cluster give it a hash tag (`{triage}:`) so that each
        script's keys (a call's hash and a queue) are in one slot."""
        self.url = url
        self.prefix = prefix
        self.events_maxlen = events_maxlen
        self.claim_idle_ms = claim_idle_ms
        self.redis = aioredis.Redis.from_url(url, socket_timeout=socket_timeout,
                                             socket_connect_timeout=socket_timeout, decode_responses=True)
        self._route = self.redis.register_script(_ROUTE)
        self._claim = self.redis.register_script(_CLAIM)
        self._finish = self.redis.register_script(_FINISH)
        self._subscriber: aioredis.Redis | None = None

    def queue_key(self, service: int) -> str:
        return f"{self.prefix}queue:{service}"

    def call_key(self, call_id: str) -> str:
        return f"{self.prefix}call:{call_id}"

    @property
    def events_key(self) -> str:
        return f"{self.prefix}events"

    @property
    def audit_key(self) -> str:
        return f"{self.prefix}audit"

    @property
    def feedback_key(self) -> str:
        return f"{self.prefix}feedback"

    @property
    def feed_channel(self) -> str:
        # Pub/sub, not a key: what one server shows its dashboards, the others show theirs.
        return f"{self.prefix}feed"

    async def close(self) -> None:
        await self.redis.aclose()
        if self._subscriber is not None:
            await self._subscriber.aclose()

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def ensure_groups(self) -> None:
        for s in SERVICES:
            try:
                await self.redis.xgroup_create(self.queue_key(s), GROUP, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    # -- the live path ------------------------------------------------------------------------------
    async def save_call(self, call_id: str, fields: dict) -> None:
        await self.redis.hset(self.call_key(call_id), mapping={k: _enc(v) for k, v in fields.items()})

    async def route(self, call_id: str, service: int, keywords: list[str], evidence: list[dict],
                    call_time: float, metadata: dict | None = None) -> str | None:
        """Add the call to the service's queue once; returns the entry id, or None if it was already there."""
        fields = {"call_id": call_id, "service": str(service), "keywords": json.dumps(keywords, ensure_ascii=False),
                  "evidence": json.dumps(evidence, ensure_ascii=False), "call_time": f"{call_time:.3f}",
                  "routed_at": f"{time.time():.3f}", "metadata": json.dumps(metadata or {}, ensure_ascii=False)}
        args = [str(service)] + [x for kv in fields.items() for x in kv]
        return await self._route(keys=[self.call_key(call_id), self.queue_key(service)], args=args)

    async def routed_services(self, call_id: str) -> list[int]:
        h = await self.redis.hgetall(self.call_key(call_id))
        return sorted(int(k.split(":")[1]) for k in h if k.startswith("route:"))

    async def publish(self, event: dict) -> str:
        return await self.redis.xadd(self.events_key, {"event": json.dumps(event, ensure_ascii=False)},
                                     maxlen=self.events_maxlen, approximate=True)

    async def record_decision(self, event: dict, model: str) -> None:
        """A model decision (a detection or a route event): to the dashboards' capped events stream and,
        with the model version, to the audit log, together."""
        text = json.dumps(event, ensure_ascii=False)
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(self.events_key, {"event": text}, maxlen=self.events_maxlen, approximate=True)
        pipe.xadd(self.audit_key, {"kind": event["type"], "call_id": event["call_id"], "model": model,
                                   "at": f"{time.time():.3f}", "event": text})
        await pipe.execute()

    async def _entries(self, key: str, start: str = "-", end: str = "+", page: int = 5_000):
        """Every entry of a stream between two ids (inclusive), oldest first, read a page at a time."""
        while True:
            got = await self.redis.xrange(key, start, end, count=page)
            for entry in got:
                yield entry
            if len(got) < page:
                return
            start = "(" + got[-1][0]

    async def audit_entries(self, start: str = "-", end: str = "+") -> list[tuple[str, dict]]:
        return [e async for e in self._entries(self.audit_key, start, end)]

    async def feedback_entries(self) -> list[tuple[str, dict]]:
        return [e async for e in self._entries(self.feedback_key)]

    async def reviews(self) -> list[ReviewedCall]:
        """Every call a dispatcher gave feedback on, with the model's detections and routes from the audit log."""
        feedback = [f for _, f in await self.feedback_entries()]
        ids = list(dict.fromkeys(f["call_id"] for f in feedback))
        wanted = set(ids)
        audit = [a async for _, a in self._entries(self.audit_key) if a.get("call_id") in wanted]
        pipe = self.redis.pipeline(transaction=False)
        for call_id in ids:
            pipe.hget(self.call_key(call_id), "duration")
        durations = {c: float(d) for c, d in zip(ids, await pipe.execute(), strict=True) if d}
        return reviewed_calls(feedback, audit, durations)

    async def fan_out(self, messages: list[str]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for m in messages:
            pipe.publish(self.feed_channel, m)
        await pipe.execute()

    def fan_in(self):
        """A pub/sub subscription to the feed channel (subscribe with `await sub.subscribe(store.feed_channel)`),
        on its own connection: a quiet channel must not trip the request timeout of the main one."""
        if self._subscriber is None:
            self._subscriber = aioredis.Redis.from_url(self.url, decode_responses=True, socket_connect_timeout=2,
                                                       health_check_interval=15)
        return self._subscriber.pubsub(ignore_subscribe_messages=True)

    async def call(self, call_id: str) -> dict:
        return await self.redis.hgetall(self.call_key(call_id))

    async def depths(self) -> dict[int, int]:
        pipe = self.redis.pipeline()
        for s in SERVICES:
            pipe.xlen(self.queue_key(s))
        return dict(zip(SERVICES, await pipe.execute(), strict=True))

    # -- dispatchers ----------------------------------------------------------------------------------
    async def _log(self, action: str, dispatcher: str, call_id: str, service: int, **extra) -> None:
        call = await self.call(call_id)
        entry = {"action": action, "dispatcher": dispatcher, "call_id": call_id, "service": str(service),
                 "at": f"{time.time():.3f}", "model": call.get("model", ""),
                 "model_said": call.get("route_keywords", ""), "evidence": call.get("route_evidence", ""),
                 **{k: _enc(v) for k, v in extra.items()}}
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(self.audit_key, {"kind": "action", **entry})
        if action in FEEDBACK_ACTIONS:
            pipe.xadd(self.feedback_key, entry)
        await pipe.execute()
        await self.publish({"type": "action", **entry})

    async def claim(self, call_id: str, service: int, dispatcher: str) -> None:
        r = await self._claim(keys=[self.call_key(call_id)], args=[str(service), dispatcher, f"{time.time():.3f}"])
        _check(r, call_id, service)
        await self._log("claim", dispatcher, call_id, service)

    async def ack(self, call_id: str, service: int, dispatcher: str) -> None:
        r = await self._finish(keys=[self.call_key(call_id), self.queue_key(service)],
                               args=[str(service), dispatcher, f"{time.time():.3f}", "acked"])
        _check(r, call_id, service)
        await self._log("ack", dispatcher, call_id, service)

    async def reroute(self, call_id: str, service: int, to_service: int, dispatcher: str) -> str | None:
        if to_service not in SERVICES or to_service == service:
            raise StoreError(f"cannot re-route call {call_id} from {service} to {to_service}: expected another "
                             f"of {', '.join(map(str, SERVICES))}")
        call = await self.call(call_id)
        r = await self._finish(keys=[self.call_key(call_id), self.queue_key(service)],
                               args=[str(service), dispatcher, f"{time.time():.3f}", "rerouted"])
        _check(r, call_id, service)
        entry = await self.route(call_id, to_service, [], [{"rerouted_from": service, "by": dispatcher}], 0.0,
                                 json.loads(call.get("metadata", "{}") or "{}"))
        await self._log("reroute", dispatcher, call_id, service, to_service=to_service)
        return entry

    async def mark_wrong(self, call_id: str, keyword: str, at: float, dispatcher: str, service: int = 0) -> None:
        if not await self.redis.exists(self.call_key(call_id)):
            raise StoreError(f"unknown call {call_id!r}")
        await self.redis.hset(self.call_key(call_id), f"wrong:{keyword}@{at:.3f}", dispatcher)
        await self._log("wrong_detection", dispatcher, call_id, service, keyword=keyword, detection_time=at)

    async def confirm(self, call_id: str, service: int, dispatcher: str) -> None:
        """The dispatcher says the call belongs to `service`, as the model routed it."""
        if not await self.redis.hexists(self.call_key(call_id), f"route:{service}"):
            raise StoreError(f"call {call_id!r} is not in the {service} queue: nothing to confirm")
        await self.redis.hset(self.call_key(call_id), f"confirmed:{service}", dispatcher)
        await self._log("confirm", dispatcher, call_id, service)

    async def mark_missed(self, call_id: str, keyword: str, at: float, dispatcher: str, service: int = 0) -> None:
        """The caller said `keyword` at about `at` seconds into the call and the model did not detect it."""
        if not await self.redis.exists(self.call_key(call_id)):
            raise StoreError(f"unknown call {call_id!r}")
        await self.redis.hset(self.call_key(call_id), f"missed:{keyword}@{at:.3f}", dispatcher)
        await self._log("missed", dispatcher, call_id, service, keyword=keyword, said_at=at)

    async def next_for(self, service: int, dispatcher: str) -> QueueEntry | None:
        """The next call of a service for a console dispatcher: first any entry a crashed dispatcher left
        pending for longer than `claim_idle_ms`, then new ones; the call is claimed for `dispatcher`."""
        key = self.queue_key(service)
        _, stale, _ = await self.redis.xautoclaim(key, GROUP, dispatcher, self.claim_idle_ms, "0-0", count=10)
        for entry_id, fields in stale:
            if fields is None:
                continue
            e = QueueEntry.from_stream(service, entry_id, fields)
            await self.redis.hset(self.call_key(e.call_id), f"claimed_by:{service}", dispatcher)
            return e
        while True:
            got = await self.redis.xreadgroup(GROUP, dispatcher, {key: ">"}, count=1)
            if not got:
                return None
            entry_id, fields = got[0][1][0]
            e = QueueEntry.from_stream(service, entry_id, fields)
            try:
                await self.claim(e.call_id, service, dispatcher)
                return e
            except StoreError:  # taken from the dashboard meanwhile: not this console's to handle
                await self.redis.xack(key, GROUP, entry_id)

    async def waiting(self, service: int, count: int = 200) -> list[tuple[QueueEntry, dict]]:
        """Entries of a queue not yet acknowledged or re-routed, oldest first, with their call hash."""
        out = []
        for entry_id, fields in await self.redis.xrange(self.queue_key(service), count=count * 4):
            e = QueueEntry.from_stream(service, entry_id, fields)
            call = await self.call(e.call_id)
            if call.get(f"state:{service}") in ("waiting", "claimed"):
                out.append((e, call))
            if len(out) >= count:
                break
        return out


def _enc(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def _check(result, call_id: str, service: int) -> None:
    if result == "ok":
        return
    reason = str(result)
    if reason == "not_routed":
        raise StoreError(f"call {call_id!r} is not in the {service} queue")
    if reason.startswith("claimed_by:"):
        raise StoreError(f"call {call_id!r} is already claimed by {reason.split(':', 1)[1]} for {service}")
    if reason == "not_claimed":
        raise StoreError(f"call {call_id!r} must be claimed before it is acknowledged or re-routed")
    raise StoreError(f"call {call_id!r} for {service}: {reason.replace('_', ' ')}")
