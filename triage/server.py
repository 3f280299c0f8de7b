"""The live service: asyncio websockets server around the pure core.

  ws  /call     a caller's audio in; detection / route / summary / error events out (ingest credential)
  ws  /feed     every event out to dashboards; dispatcher actions in (claim, ack, reroute, wrong), each
                under the name of the dispatcher credential that opened the feed
  GET /         the dispatcher dashboard (static files in triage/dashboard)
  GET /whoami   the dispatcher a credential names (the dashboard's sign-in)
  GET /healthz  200 when Redis and the model are ready
  GET /metrics  Prometheus text

The event loop only receives: each audio frame is checked and appended. Every tick (30 ms by default), a
worker thread runs the ScoringEngine over all live calls at once — decoding, resampling, log-mel and
one batched model call — so frames and keepalive pings never wait behind signal processing. Redis
writes go through an outbox: if Redis is lost, calls go on being scored and their routes wait in
memory until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import math
import mimetypes
import os
import socket
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from redis.exceptions import RedisError
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from triage import audit, protocol
from triage.credentials import CredentialError, CredentialFile, Credentials, Identity
from triage.engine import CallAudio, ScoringEngine, TickResult
from triage.metrics import ServiceMetrics
from triage.model import KeywordModel, ModelError
from triage.protocol import ProtocolError, Start, Stop
from triage.recording import CallInfo, RecordingError, Recordings
from triage.router import CallRouter, RouteDecision
from triage.spotter import Detection
from triage.store import DEFAULT_PREFIX, RouteStore, StoreError

log = logging.getLogger("triage.server")
DASHBOARD = Path(__file__).parent / "dashboard"


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None  # the anonymous ingest credential (`--token`)
    users_file: Path | None = None  # named ingest and dispatcher credentials (`triage users`)
    certfile: Path | None = None  # with keyfile: serve wss:// and https://
    keyfile: Path | None = None
    max_message_bytes: int = 1 << 20
    max_calls: int = 500
    idle_timeout_s: float = 30.0
    handshake_timeout_s: float = 10.0  # a client dribbling its HTTP upgrade (slowloris) is dropped after this
    resume_grace_s: float = 60.0
    takeover_ping_s: float = 2.0  # a resume takes over a connection that does not answer a ping this fast
    # Under a third of the model's 100 ms hop: each tick scores the calls whose next window is complete, so
    # a window waits 15 ms for its tick on average. Measured at 100 live calls on one core with the gated v7
    # (BENCHMARKS.md): p95 detection latency 0.29 s against 0.32 s at 0.05 s, for 9 % more server CPU.
    score_interval_s: float = 0.03
    outbox_limit: int = 10_000
    allowed_origins: tuple[str, ...] = ()  # beside the server's own host
    # Dashboard events travel between all servers on one Redis (worker processes, replicas, machines)
    # through pub/sub; each knows its own by this name.
    instance: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    reuse_port: bool = False  # one of `triage serve --workers N` processes sharing the port
    key_prefix: str = DEFAULT_PREFIX  # of every Redis key; a hash tag such as "{triage}:" on Redis Cluster
    record_dir: Path | None = None  # opt-in: keep each call's audio, events and feedback here (recording.py)
    retention_days: float = 30.0  # recordings older than this are deleted by the server
    retention_check_s: float = 3600.0
    audit_dir: Path | None = None  # each finished UTC day of the audit log is exported here as JSON lines
    audit_export_check_s: float = 3600.0


class CallConnection(ServerConnection):
    """A websocket whose call audio skips websockets' message queue: taking a 20 ms frame in `process_event`
    cost a throwaway server 21–26 µs where queueing it for the handler's `async for` cost 30–31 (uvloop, 100
    connections at 50 frames a second), and the whole service about 0.2 ms less CPU per call-second
    (BENCHMARKS.md, session 31). The sink is an append, so nothing waits behind it, and websockets' flow
    control, which pauses reading while its queue is full, has nothing to do for these frames. It reads the
    queue's length (`recv_messages.frames`, not public API: websockets is pinned in pyproject.toml, and
    tests/test_recording.py fails if the frames stop skipping the queue)."""

    audio_sink: Callable[[bytes], bool] | None = None  # True when it took the frame

    def process_event(self, event: Frame) -> None:
        # A frame goes the usual way while anything is queued before it (frames that came before the call
        # was ready, a text message, a fragmented message), so the call's audio stays in order; and when
        # the sink refuses it, so that the handler reads it and answers as for any bad frame.
        if (self.audio_sink is not None and event.opcode is Opcode.BINARY and event.fin
                and not len(self.recv_messages.frames) and self.audio_sink(event.data)):
            return
        super().process_event(event)


@dataclass
class CallSession:
    start: Start
    audio: CallAudio
    router: CallRouter
    ws: ServerConnection | None = None
    last_frame_at: float = field(default_factory=time.monotonic)
    detections: list[Detection] = field(default_factory=list)
    stored_services: set[int] = field(default_factory=set)
    disconnected_at: float | None = None
    ended: bool = False
    model_version: str = ""  # the model that scores this call, from its start to its end

    @property
    def call_id(self) -> str:
        return self.start.call_id

    @property
    def duration(self) -> float:
        return self.audio.duration


class Outbox:
    """Redis writes in order; kept and retried while Redis is unreachable. Bounded: when nearly full the
    server refuses new calls rather than lose a route."""

    def __init__(self, limit: int):
        self.limit = limit
        self.items: deque = deque()
        self.wakeup = asyncio.Event()

    def put(self, factory) -> asyncio.Future:
        """Queue a write; the future resolves once it is in Redis."""
        done = asyncio.get_running_loop().create_future()
        self.items.append((factory, done))
        self.wakeup.set()
        return done

    @property
    def nearly_full(self) -> bool:
        return len(self.items) >= self.limit * 0.8


class TriageServer:
    def __init__(self, model: KeywordModel, store: RouteStore, config: ServerConfig | None = None):
        self.model = model
        self.store = store
        self.config = config or ServerConfig()
        self.sessions: dict[str, CallSession] = {}
        self.recordings = Recordings(self.config.record_dir) if self.config.record_dir else None
        self.engine = ScoringEngine(model, keep_received=self.recordings is not None)
        self.feeds: dict[ServerConnection, asyncio.Queue] = {}
        self.metrics = ServiceMetrics()
        self.outbox = Outbox(self.config.outbox_limit)
        self.redis_up = False
        self._tasks: list[asyncio.Task] = []
        self._server = None
        self._scoring = asyncio.Lock()
        self._fan_out: asyncio.Queue[str] = asyncio.Queue(maxsize=10_000)
        self._closing = False
        self._closers: set[asyncio.Task] = set()
        # The identity each dashboard was admitted with, from the upgrade to its handler: admitting
        # again there could read a users file changed in between and see an open server.
        self._feed_identities: weakref.WeakKeyDictionary[ServerConnection, Identity | None] = \
            weakref.WeakKeyDictionary()
        self._users = CredentialFile(self.config.users_file) if self.config.users_file else None
        self._unrecorded: set[str] = set()  # calls whose recording failed (said once)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._users is not None:
            try:
                self._users.users()
            except CredentialError as e:
                raise RuntimeError(str(e)) from None
        creds = self._credentials()
        if not _loopback(self.config.host) and not (creds.has_role("ingest") and creds.has_role("dispatcher")):
            raise RuntimeError(f"refusing to listen on {self.config.host} without credentials: give --token "
                               f"(ingest) and --users FILE with at least one dispatcher (triage users add), "
                               f"or listen on 127.0.0.1")
        try:
            await self.store.ping()
            await self.store.ensure_groups()
        except (RedisError, OSError) as e:
            raise RuntimeError(f"Redis at {self.store.url} is not reachable: {e}") from None
        self.redis_up = True
        # compression=None: telephone audio does not deflate, and decoding permessage-deflate on every
        # 20 ms frame was 2.7 % of a worker's CPU at 100 calls (py-spy); the dashboard's JSON is small.
        self._server = await serve(self._handler, self.config.host, self.config.port, compression=None,
                                   process_request=self._process_request, max_size=self.config.max_message_bytes,
                                   create_connection=CallConnection,
                                   ping_interval=20, ping_timeout=20, close_timeout=5,
                                   open_timeout=self.config.handshake_timeout_s,
                                   reuse_port=self.config.reuse_port, ssl=self._tls())
        self.config.port = self._server.sockets[0].getsockname()[1]
        loops = [self._scoring_loop(), self._outbox_loop(), self._reaper_loop(), self._fan_out_loop(),
                 self._fan_in_loop()] + ([self._retention_loop()] if self.recordings else []) + (
                    [self._audit_export_loop()] if self.config.audit_dir else [])
        for coro in loops:
            self._tasks.append(asyncio.create_task(coro))

    async def stop(self) -> None:
        """Graceful: end live calls with a summary, flush the outbox, close the sockets."""
        self._closing = True
        for s in list(self.sessions.values()):
            await self._end_call(s, "server_shutdown")
        if self._server:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._drain_outbox(), 5)
        # A cancellation that lands inside a redis-py call can be swallowed (redis/redis-py#2028, #2551): the
        # task stayed pending and stop() hung for ever (a CI run), so it is repeated.
        pending = set(self._tasks)
        for _ in range(40):
            if not pending:
                break
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.25)
        for t in self._tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                log.error("background task %s had ended with an error", t.get_coro().__name__, exc_info=t.exception())
        if pending:
            log.error("background tasks still running after stop: %s", [t.get_coro().__name__ for t in pending])

    async def reload_model(self) -> bool:
        """Load the model file again (SIGHUP): new calls use it, live calls end on the model they began
        with, nothing pauses. A file that does not load is refused loudly and the current model stays."""
        try:
            model = await asyncio.to_thread(KeywordModel, self.model.path)
        except ModelError as e:
            log.error("model reload refused, still serving %s: %s", self.model.version, e)
            self.metrics.inc("triage_errors_total", code="model_reload")
            self._broadcast({"type": "warning", "code": "model_reload_failed",
                             "message": f"model reload refused ({str(e)[:200]}); still serving {self.model.version}"})
            return False
        old, self.model = self.model, model
        self.engine.use_model(model)
        self.metrics.inc("triage_model_reloads_total")
        log.warning("model reloaded: %s → %s (live calls finish on %s)", old.version, model.version, old.version)
        ev = {"type": "model_reloaded", "call_id": "", "from": old.version, "to": model.version,
              "live_calls_on_previous": len(self.sessions)}
        self._persist(lambda: self.store.record_decision(ev, model.version))
        self._broadcast(ev)
        return True

    # -- HTTP side ---------------------------------------------------------------------------------
    def _tls(self):
        if not self.config.certfile:
            return None
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.config.certfile, self.config.keyfile)
        return ctx

    def _credentials(self) -> Credentials:
        users = {}
        if self._users is not None:
            try:
                users = self._users.users()
            except CredentialError as e:
                # Fail closed for named users only: the --token ingest credential keeps calls flowing.
                log.error("users file unreadable, named credentials refused until it is fixed: %s", e)
        return Credentials(users, self.config.token, required=self._users is not None)

    def _admission(self, request, role: str):
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else None
        given = given or parse_qs(urlsplit(request.path).query).get("token", [None])[0]
        return self._credentials().admit(given, role, time.time())

    def _origin_ok(self, request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser
        host = request.headers.get("Host", "")
        allowed = {f"http://{host}", f"https://{host}", *self.config.allowed_origins}
        return origin in allowed

    async def _process_request(self, connection: ServerConnection, request):
        if request.method != "GET":  # websockets parses any method; every route here is GET
            return _set_header(connection.respond(HTTPStatus.METHOD_NOT_ALLOWED, f"{request.method[:16]} not "
                                                  "allowed: every route here is GET\n"), "Allow", "GET")
        path = urlsplit(request.path).path
        if path == "/healthz":
            ok = self.redis_up
            return connection.respond(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
                                      json.dumps({"redis": self.redis_up, "model": str(self.model.path),
                                                  "model_version": self.model.version,
                                                  "live_calls": len(self.sessions),
                                                  "instance": self.config.instance,
                                                  "pid": os.getpid()}) + "\n")
        if path == "/metrics":
            return _set_header(connection.respond(HTTPStatus.OK, await self._metrics_text()),
                               "Content-Type", "text/plain; version=0.0.4")
        if path == "/whoami":  # the dashboard's sign-in: is this a dispatcher credential, and whose?
            admission = self._admission(request, "dispatcher")
            if admission.status != 200:
                return connection.respond(HTTPStatus(admission.status), admission.message + "\n")
            return _set_header(connection.respond(HTTPStatus.OK, json.dumps(
                {"dispatcher": admission.identity.name if admission.identity else None}) + "\n"),
                "Content-Type", "application/json")
        if path.startswith("/recordings/"):
            return await self._recording_clip(connection, request, path)
        if path in ("/call", "/feed"):
            admission = self._admission(request, "ingest" if path == "/call" else "dispatcher")
            if admission.status != 200:
                self.metrics.inc("triage_rejected_total", reason="auth" if admission.status == 401 else "role")
                return connection.respond(HTTPStatus(admission.status), admission.message + "\n")
            if path == "/feed" and not self._origin_ok(request):
                self.metrics.inc("triage_rejected_total", reason="origin")
                return connection.respond(HTTPStatus.FORBIDDEN, "origin not allowed\n")
            if path == "/feed":
                self._feed_identities[connection] = admission.identity
            if path == "/call" and (len(self.sessions) >= self.config.max_calls or self.outbox.nearly_full):
                self.metrics.inc("triage_rejected_total", reason="capacity")
                return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many live calls, try again\n")
            return None
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return connection.respond(HTTPStatus.NOT_FOUND, f"no websocket at {path}; use /call or /feed\n")
        return self._static(connection, path)

    async def _recording_clip(self, connection, request, path: str):
        """GET /recordings/<call_id>/clip?start=S&end=E: a few seconds of a recorded call (PCM16 WAV), for a
        dispatcher to hear the evidence before confirming."""
        admission = self._admission(request, "dispatcher")
        if admission.status != 200:
            return connection.respond(HTTPStatus(admission.status), admission.message + "\n")
        parts = path.split("/")
        if self.recordings is None or len(parts) != 4 or parts[3] != "clip":
            return connection.respond(HTTPStatus.NOT_FOUND, "no recording here: expected /recordings/<call_id>/clip "
                                      "on a server started with --record\n")
        query = parse_qs(urlsplit(request.path).query)
        try:
            start, end = float(query["start"][0]), float(query["end"][0])
            if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end and end - start <= 60):
                raise ValueError
        except (KeyError, ValueError):
            return connection.respond(HTTPStatus.BAD_REQUEST, "expected ?start=S&end=E in seconds, "
                                      "0 <= S < E, at most 60 s apart\n")
        try:
            body = await asyncio.to_thread(self.recordings.clip, parts[2], start, end)
        except RecordingError as e:
            return connection.respond(HTTPStatus.NOT_FOUND, f"{e}\n")
        return _bytes_response(connection, body, "audio/wav", "no-store")

    def _static(self, connection, path: str):
        name = "index.html" if path in ("/", "") else path.lstrip("/")
        file = (DASHBOARD / name).resolve()
        if DASHBOARD.resolve() not in file.parents or not file.is_file():
            return connection.respond(HTTPStatus.NOT_FOUND, f"not found: {path}\n")
        return _bytes_response(connection, file.read_bytes(),
                               mimetypes.guess_type(file.name)[0] or "application/octet-stream", "no-cache")

    def _update_gauges(self) -> None:
        self.metrics.set_gauges(live_calls=len(self.sessions), feed_clients=len(self.feeds),
                                redis_up=int(self.redis_up), outbox_pending=len(self.outbox.items))

    async def _metrics_text(self) -> str:
        self._update_gauges()
        lines = [self.metrics.exposition().rstrip("\n")]
        if self.redis_up:
            try:
                depths = await asyncio.wait_for(self.store.depths(), 1.0)
                lines.append("# TYPE triage_queue_entries gauge")
                lines += [f'triage_queue_entries{{service="{s}"}} {n}' for s, n in depths.items()]
            except (TimeoutError, RedisError, OSError):
                pass
        return "\n".join(lines) + "\n"

    # -- websockets --------------------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        path = urlsplit(ws.request.path).path
        if path == "/call":
            await self._handle_call(ws)
        else:
            await self._handle_feed(ws, self._feed_identities.pop(ws))

    async def _fail(self, ws: ServerConnection, err: ProtocolError, call_id: str | None = None) -> None:
        self.metrics.inc("triage_errors_total", code=err.code)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps({**err.to_event(), "call_id": call_id}))
            await ws.close(err.close_code, err.code)

    async def _handle_call(self, ws: CallConnection) -> None:
        session: CallSession | None = None
        try:
            first = await asyncio.wait_for(ws.recv(), self.config.idle_timeout_s)
            if isinstance(first, bytes):
                raise ProtocolError("audio_before_start", "send a JSON 'start' message before any audio")
            msg = protocol.parse_client_text(first)
            if isinstance(msg, Stop):
                raise ProtocolError("stop_before_start", "nothing to stop: send 'start' first")
            session, resumed = await self._open(msg, ws)
            ws.audio_sink = self._audio_sink(session, ws)
            await ws.send(protocol.event("ready", session.call_id, resumed=resumed,
                                         samples_received=session.audio.samples_in, sample_rate=msg.sample_rate,
                                         services=list(session.router.decision.services)))
            # Idle calls are closed by the reaper: a timeout per frame would cost more than the frame.
            async for data in ws:  # what the sink left: frames queued before it, bad frames, text
                if isinstance(data, bytes):
                    self._take_audio(session, data)
                    continue
                if isinstance(protocol.parse_client_text(data), Start):
                    raise ProtocolError("already_started", "this connection's call has started already")
                await self._end_call(session, "completed")
                return
            raise ConnectionClosed(None, None)
        except ProtocolError as e:
            await self._fail(ws, e, session.call_id if session else None)
            if session is not None and e.code != "call_in_progress":
                await self._end_call(session, f"error:{e.code}", notify=False)
        except ConnectionClosed:
            if session is not None and session.ws is ws and not session.ended:
                session.ws = None
                session.disconnected_at = time.monotonic()
                self.metrics.inc("triage_disconnects_total")
                self._broadcast({"type": "call_disconnected", "call_id": session.call_id})
        except TimeoutError:
            await self._fail(ws, ProtocolError("idle_timeout", "no start message", protocol.CLOSE_IDLE))
        finally:
            ws.audio_sink = None

    def _take_audio(self, session: CallSession, data: bytes) -> None:
        protocol.check_audio_frame(data, session.start)
        session.last_frame_at = time.monotonic()
        self.engine.receive(session.call_id, data)

    def _audio_sink(self, session: CallSession, ws: CallConnection) -> Callable[[bytes], bool]:
        def take(data: bytes) -> bool:
            # Refused (left to the handler) once the call has ended or moved to another connection, and
            # when the frame is bad: the handler then fails the call as it always has.
            if session.ended or session.ws is not ws:
                return False
            try:
                self._take_audio(session, data)
            except ProtocolError:
                return False
            return True
        return take

    async def _open(self, msg: Start, ws: ServerConnection) -> tuple[CallSession, bool]:
        existing = self.sessions.get(msg.call_id)
        if existing is not None:
            if existing.ws is not None:
                if await _answers_ping(existing.ws, self.config.takeover_ping_s):
                    raise ProtocolError("call_in_progress", f"call {msg.call_id} is connected already",
                                        protocol.CLOSE_POLICY)
                # The old line is dead or half-open (no pong): the caller who came back takes the call over.
                old, existing.ws = existing.ws, None
                self.metrics.inc("triage_takeovers_total")
                asyncio.ensure_future(old.close(protocol.CLOSE_TAKEN_OVER, "call resumed on a newer connection"))
            if (existing.start.sample_rate, existing.start.encoding) != (msg.sample_rate, msg.encoding):
                raise ProtocolError("resume_mismatch", "a resumed call must keep its sample_rate and encoding "
                                    f"({existing.start.sample_rate}, {existing.start.encoding})")
            existing.ws, existing.disconnected_at, existing.last_frame_at = ws, None, time.monotonic()
            self.metrics.inc("triage_resumes_total")
            self._broadcast({"type": "call_resumed", "call_id": msg.call_id})
            return existing, True
        session = CallSession(msg, self.engine.add(msg.call_id, msg.sample_rate, msg.encoding), CallRouter(), ws,
                              model_version=self.model.version)
        # A call this service routed before a restart keeps its routes: none is added twice.
        if msg.id_given and self.redis_up:
            with contextlib.suppress(RedisError, OSError):
                session.stored_services = set(await self.store.routed_services(msg.call_id))
        self.sessions[msg.call_id] = session
        self.metrics.inc("triage_calls_total")
        now = time.time()
        started = {"state": "live", "started_at": f"{now:.3f}", "sample_rate": msg.sample_rate,
                   "encoding": msg.encoding, "metadata": msg.metadata, "model": session.model_version}
        if self.recordings is not None:
            try:
                self.recordings.open(CallInfo(msg.call_id, msg.sample_rate, msg.encoding, now, msg.metadata,
                                              session.model_version), offset=session.audio.samples_in)
                started["recorded"] = "1"
            except (OSError, RuntimeError) as e:
                self._recording_failed(msg.call_id, e)
        self._persist(lambda: self.store.save_call(msg.call_id, started))
        self._broadcast({"type": "call_started", "call_id": msg.call_id, "metadata": msg.metadata,
                         "recorded": "recorded" in started})
        return session, False

    async def _end_call(self, s: CallSession, reason: str, notify: bool = True) -> None:
        if s.ended:
            return
        s.ended = True
        await self._score_once(final=frozenset({s.call_id}))
        self.sessions.pop(s.call_id, None)
        self.engine.remove(s.call_id)
        summary = {"duration": round(s.duration, 3), "reason": reason,
                   "detections": [d.to_dict() for d in s.detections], **s.router.decision.to_dict()}
        if self.recordings is not None:
            self._record_event(s.call_id, {"type": "summary", "call_id": s.call_id, **summary})
            try:
                self.recordings.close(s.call_id)
            except (OSError, RuntimeError) as e:
                self._recording_failed(s.call_id, e)
            self._unrecorded.discard(s.call_id)
        self._persist(lambda: self.store.save_call(s.call_id, {"state": "ended", "ended_reason": reason,
                                                             "duration": f"{s.duration:.3f}"}))
        self._broadcast({"type": "call_ended", "call_id": s.call_id, "reason": reason,
                         "services": list(s.router.decision.services)})
        if notify and s.ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await s.ws.send(protocol.event("summary", s.call_id, **summary))
                await s.ws.close(protocol.CLOSE_NORMAL, "call ended")

    # -- scoring -----------------------------------------------------------------------------------
    async def _scoring_loop(self) -> None:
        level_every, last_level = 0.25, 0.0
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            # A fixed cadence, not a fixed pause: pausing a whole interval after each tick stretched the
            # period to interval + tick time, and every detection waited that much longer at 100 calls.
            due = max(due + self.config.score_interval_s, loop.time())
            await asyncio.sleep(due - loop.time())
            try:
                await self._score_once()
            except Exception:  # never let one bad batch stop scoring for every call
                log.exception("scoring failed")
                self.metrics.inc("triage_errors_total", code="scoring")
            self._update_gauges()
            now = time.monotonic()
            # Sent even with no dashboard here: dashboards on other servers see this server's calls.
            if now - last_level >= level_every and self.sessions:
                last_level = now
                self._broadcast({"type": "levels", "calls": {
                    s.call_id: {"level_db": round(s.audio.level_db, 1), "duration": round(s.duration, 2)}
                    for s in self.sessions.values()}})

    async def _score_once(self, final: frozenset[str] = frozenset()) -> None:
        async with self._scoring:
            t = time.perf_counter()
            result, unrecorded = await asyncio.to_thread(self._tick, final)
            for call_id, err in unrecorded.items():
                self._recording_failed(call_id, err)
            if result.windows:
                self.metrics.scoring_seconds.observe(time.perf_counter() - t)
                self.metrics.batch_windows.observe(result.windows)
                self.metrics.inc("triage_windows_scored_total", result.windows)
            self.metrics.inc("triage_audio_seconds_total", result.audio_seconds)
            self.metrics.inc("triage_chunks_total", result.frames)
            for call_id, err in result.errors.items():
                s = self.sessions.get(call_id)
                if s is not None and not s.ended:
                    if s.ws is not None:
                        await self._fail(s.ws, err, call_id)
                    asyncio.ensure_future(self._end_call(s, f"error:{err.code}", notify=False))
            for call_id, dets in result.detections.items():
                s = self.sessions.get(call_id)
                if s is not None:
                    await self._on_detections(s, dets)

    def _tick(self, final: frozenset[str]) -> tuple[TickResult, dict[str, Exception]]:
        """In the scoring thread: the engine's tick, then the bytes it took to the recordings."""
        result = self.engine.tick(final)
        failed: dict[str, Exception] = {}
        if self.recordings is not None:
            for call_id, data in result.received.items():
                try:
                    self.recordings.write(call_id, data)
                except (OSError, RuntimeError) as e:
                    failed[call_id] = e
        return result, failed

    # -- recording -----------------------------------------------------------------------------------
    def _recording_failed(self, call_id: str, err: Exception) -> None:
        """Loud, once per call: the call goes on being scored and routed, but its recording is incomplete."""
        if call_id in self._unrecorded:
            return
        self._unrecorded.add(call_id)
        log.error("recording of call %s failed, the call goes on unrecorded: %s", call_id, err)
        self.metrics.inc("triage_errors_total", code="recording")
        self._broadcast({"type": "warning", "code": "recording_failed", "call_id": call_id,
                         "message": f"recording of call {call_id} failed ({str(err)[:200]}); "
                                    "the call is still scored and routed"})

    def _record_event(self, call_id: str, ev: dict) -> None:
        if self.recordings is None:
            return
        try:
            self.recordings.event(call_id, ev)
        except OSError as e:
            self._recording_failed(call_id, e)

    async def _retention_loop(self) -> None:
        """Deletes recordings past the retention period (never a live call's)."""
        while True:
            try:
                gone = await asyncio.to_thread(self.recordings.purge_expired, self.config.retention_days,
                                               frozenset(self.sessions))
                if gone:
                    log.info("retention: deleted %d recordings older than %g days", len(gone),
                             self.config.retention_days)
                    self.metrics.inc("triage_recordings_purged_total", len(gone))
            except (OSError, RuntimeError) as e:
                log.error("retention: could not delete expired recordings in %s: %s", self.recordings.root, e)
                self.metrics.inc("triage_errors_total", code="retention")
            await asyncio.sleep(self.config.retention_check_s)

    async def _audit_export_loop(self) -> None:
        while True:
            try:
                today = datetime.datetime.now(datetime.UTC).date()
                for path, n in await audit.export_finished_days(self.store, self.config.audit_dir, today):
                    log.info("audit log: %d entries exported to %s", n, path)
            except (RedisError, OSError) as e:
                log.error("audit log: daily export to %s failed, retried in %g s: %s", self.config.audit_dir,
                          self.config.audit_export_check_s, e)
                self.metrics.inc("triage_errors_total", code="audit_export")
            await asyncio.sleep(self.config.audit_export_check_s)

    async def _on_detections(self, s: CallSession, dets: list[Detection]) -> None:
        s.detections += dets
        for d in dets:
            self.metrics.inc("triage_detections_total", keyword=d.keyword)
            self.metrics.detection_lag.observe(max(0.0, s.duration - d.time))
            ev = {"type": "detection", "call_id": s.call_id, **d.to_dict()}
            self._record_event(s.call_id, ev)
            await self._to_caller(s, ev)
            self._broadcast(ev)
            self._persist(lambda ev=ev: self.store.record_decision(ev, s.model_version))
        decision = s.router.update(dets)
        if decision is not None:
            await self._on_route(s, decision)

    async def _on_route(self, s: CallSession, decision: RouteDecision) -> None:
        self.metrics.inc("triage_route_changes_total")
        ev = {"type": "route", "call_id": s.call_id, "metadata": s.start.metadata, **decision.to_dict()}
        writes = []
        for service in decision.services:
            if service in s.stored_services:
                continue
            s.stored_services.add(service)
            evidence = [{"keyword": e.keyword, "time": round(e.time, 3), "confidence": round(e.confidence, 4)}
                        for e in decision.evidence[service]]
            writes.append(self._persist(self._route_writer(s, service, decision.keywords[service], evidence,
                                                           decision.first_time(service))))
        self._persist(lambda: self.store.save_call(s.call_id, {
            "services": list(decision.services), "route_keywords": json.dumps(decision.keywords),
            "route_evidence": json.dumps(decision.to_dict()["evidence"], ensure_ascii=False)}))
        self._persist(lambda: self.store.record_decision(ev, s.model_version))
        self._record_event(s.call_id, ev)
        # The caller hears of a route once it is in Redis; if Redis is down it hears "stored": false now
        # and "route_stored" when the outbox gets it there.
        stored = not writes
        if writes and self.redis_up:
            done, _ = await asyncio.wait(writes, timeout=1.0)
            stored = len(done) == len(writes)
        await self._to_caller(s, {**ev, "stored": stored})
        self._broadcast(ev)
        if not stored:
            asyncio.ensure_future(self._announce_stored(s, writes, list(decision.services)))

    async def _announce_stored(self, s: CallSession, writes: list[asyncio.Future], services: list[int]) -> None:
        await asyncio.gather(*writes)
        await self._to_caller(s, {"type": "route_stored", "call_id": s.call_id, "services": services})

    def _route_writer(self, s: CallSession, service: int, keywords: list[str], evidence: list[dict], at: float):
        return lambda: self.store.route(s.call_id, service, keywords, evidence, at, s.start.metadata)

    # -- output --------------------------------------------------------------------------------------
    async def _to_caller(self, s: CallSession, ev: dict) -> None:
        if s.ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await s.ws.send(json.dumps(ev, ensure_ascii=False))

    def _broadcast(self, ev: dict) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # the live view only: state is in Redis
            self._fan_out.put_nowait(json.dumps({"from": self.config.instance, "event": ev}, ensure_ascii=False))
        if self.feeds:
            self._to_feeds(json.dumps(ev, ensure_ascii=False))

    def _to_feeds(self, text: str) -> None:
        for ws, q in list(self.feeds.items()):
            try:
                q.put_nowait(text)
            except asyncio.QueueFull:  # a dashboard this far behind is stuck: it reconnects and resyncs
                self.feeds.pop(ws, None)
                asyncio.ensure_future(ws.close(protocol.CLOSE_TRY_AGAIN, "too slow, reconnect"))

    async def _fan_out_loop(self) -> None:
        """This server's dashboard events to the other servers on the same Redis (batched; while Redis
        is down, other servers' dashboards miss them live and get the state from Redis on reconnect)."""
        while True:
            batch = [await self._fan_out.get()]
            while not self._fan_out.empty() and len(batch) < 500:
                batch.append(self._fan_out.get_nowait())
            with contextlib.suppress(RedisError, OSError):
                await self.store.fan_out(batch)

    async def _fan_in_loop(self) -> None:
        """The other servers' dashboard events to this server's dashboards."""
        # get_message with a timeout rather than listen(): a task cancelled inside redis-py's listen()
        # can stay pending for ever (seen as a hung stop()), so the loop also ends on `_closing`.
        while not self._closing:
            sub = self.store.fan_in()
            try:
                await sub.subscribe(self.store.feed_channel)
                while not self._closing:
                    msg = await sub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    envelope = json.loads(msg["data"])
                    if envelope.get("from") != self.config.instance and self.feeds:
                        self._to_feeds(json.dumps(envelope["event"], ensure_ascii=False))
            except (RedisError, OSError):
                await asyncio.sleep(1.0)  # Redis down: the outbox loop reports it; subscribe again
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await sub.aclose()

    def _persist(self, factory) -> asyncio.Future:
        return self.outbox.put(factory)

    async def _outbox_loop(self) -> None:
        backoff = 0.1
        while True:
            if not self.outbox.items:
                self.outbox.wakeup.clear()
                await self.outbox.wakeup.wait()
            factory, done = self.outbox.items[0]
            try:
                await factory()
            except (RedisError, OSError) as e:
                if self.redis_up:
                    self.redis_up = False
                    log.warning("Redis unreachable or refusing writes (%s): routes are kept until it returns", e)
                    self.metrics.inc("triage_redis_failures_total")
                    # The reason goes out as Redis gave it: "Connection refused" and "MISCONF ... No space
                    # left on device" call for different fixes.
                    await self._tell_all({"type": "warning", "code": "store_unavailable",
                                          "message": f"routing store unreachable or refusing writes ({str(e)[:200]}); "
                                                     "routes are kept and retried"})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            self.outbox.items.popleft()
            if not done.done():
                done.set_result(True)
            backoff = 0.1
            if not self.redis_up:
                self.redis_up = True
                log.warning("Redis is back")
                await self._tell_all({"type": "store_recovered", "message": "routing store reachable again"})

    async def _drain_outbox(self) -> None:
        while self.outbox.items and self.redis_up:
            await asyncio.sleep(0.02)

    async def _tell_all(self, ev: dict) -> None:
        for s in list(self.sessions.values()):
            await self._to_caller(s, {**ev, "call_id": s.call_id})
        self._broadcast(ev)

    async def _reaper_loop(self) -> None:
        """Ends calls whose line stayed down past the resume grace, and closes silent connections."""
        idle = self.config.idle_timeout_s
        while True:
            await asyncio.sleep(min(1.0, idle / 4))
            now = time.monotonic()
            for s in list(self.sessions.values()):
                if s.disconnected_at is not None and now - s.disconnected_at > self.config.resume_grace_s:
                    await self._end_call(s, "dropped", notify=False)
                elif s.ws is not None and not s.ended and now - s.last_frame_at > idle:
                    # Closing waits for the client's close frame (up to close_timeout): a client that never
                    # sends one (a frame dribbled byte by byte) must not hold up the reaper, so the close
                    # runs beside it.
                    closing = asyncio.create_task(self._fail(s.ws, ProtocolError(
                        "idle_timeout", f"no audio for {idle:g} s", protocol.CLOSE_IDLE), s.call_id))
                    self._closers.add(closing)
                    closing.add_done_callback(self._closers.discard)
                    await self._end_call(s, "error:idle_timeout", notify=False)

    # -- dashboards --------------------------------------------------------------------------------
    async def _handle_feed(self, ws: ServerConnection, identity: Identity | None) -> None:
        # Events are queued from the moment the dashboard connects; the snapshot goes out first, then
        # the queue, so nothing that happens while the snapshot is read is missed.
        q: asyncio.Queue = asyncio.Queue(maxsize=10_000)
        self.feeds[ws] = q
        writer = None
        try:
            snapshot = {**await self._snapshot(), "dispatcher": identity.name if identity else None}
            await ws.send(json.dumps(snapshot, ensure_ascii=False))
            writer = asyncio.create_task(_drain(ws, q))
            async for raw in ws:
                q.put_nowait(json.dumps(await self._dashboard_action(raw, identity), ensure_ascii=False))
        except (ConnectionClosed, asyncio.QueueFull):
            pass
        finally:
            self.feeds.pop(ws, None)
            if writer is not None:
                writer.cancel()

    async def _snapshot(self) -> dict:
        queues: dict[str, list] = {}
        if self.redis_up:
            with contextlib.suppress(RedisError, OSError):
                for service in (15, 17, 18):
                    queues[str(service)] = [_card(e, call) for e, call in await self.store.waiting(service)]
        live = {s.call_id: {"metadata": s.start.metadata, "duration": round(s.duration, 2),
                            "detections": [d.to_dict() for d in s.detections],
                            "recorded": self.recordings is not None and self.recordings.is_recording(s.call_id),
                            "services": list(s.router.decision.services)} for s in self.sessions.values()}
        return {"type": "snapshot", "queues": queues, "live": live, "redis": self.redis_up}

    async def _dashboard_action(self, raw, identity: Identity | None = None) -> dict:
        try:
            a = protocol.parse_action(raw if isinstance(raw, str) else raw.decode("utf-8", "replace"))
        except ProtocolError as e:
            return {"type": "action_result", "ok": False, "message": f"bad action: {e.detail}"}
        # Who acted is the credential's name; only an open (loopback, unconfigured) server takes the name
        # the dashboard typed.
        who = identity.name if identity else a.dispatcher
        if not who:
            return {"type": "action_result", "ok": False, "message": "bad action: dispatcher name is required"}
        try:
            if a.action == "claim":
                await self.store.claim(a.call_id, a.service, who)
            elif a.action == "ack":
                await self.store.ack(a.call_id, a.service, who)
            elif a.action == "reroute":
                await self.store.reroute(a.call_id, a.service, a.to_service, who)
            elif a.action == "confirm":
                await self.store.confirm(a.call_id, a.service, who)
            elif a.action == "missed":
                await self.store.mark_missed(a.call_id, a.keyword, a.time, who, a.service)
            else:
                await self.store.mark_wrong(a.call_id, a.keyword, a.time, who, a.service)
        except StoreError as e:
            return {"type": "action_result", "ok": False, "action": a.action, "call_id": a.call_id, "message": str(e)}
        except (RedisError, OSError):
            return {"type": "action_result", "ok": False, "action": a.action, "call_id": a.call_id,
                    "message": "routing store unreachable: nothing was changed, try again"}
        done = {"type": "dispatch", "action": a.action, "call_id": a.call_id, "service": a.service,
                "dispatcher": who, "to_service": a.to_service, "keyword": a.keyword, "time": a.time}
        self._record_event(a.call_id, {**done, "at": round(time.time(), 3)})
        self._broadcast(done)
        return {"type": "action_result", "ok": True, "action": a.action, "call_id": a.call_id}


def _card(e, call: dict) -> dict:
    return {"call_id": e.call_id, "entry": e.id, "service": e.service, "keywords": e.keywords,
            "evidence": json.loads(e.fields.get("evidence", "[]")),
            "metadata": json.loads(e.fields.get("metadata", "{}") or "{}"),
            "routed_at": float(e.fields.get("routed_at", 0)), "state": call.get(f"state:{e.service}"),
            "claimed_by": call.get(f"claimed_by:{e.service}"), "call_state": call.get("state"),
            "recorded": call.get("recorded") == "1", "confirmed_by": call.get(f"confirmed:{e.service}")}


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _set_header(resp, name: str, value: str):
    # websockets' Headers is a multi-dict: assignment would add a second header, not replace it.
    if name in resp.headers:
        del resp.headers[name]
    resp.headers[name] = value
    return resp


def _bytes_response(connection, body: bytes, content_type: str, cache: str):
    resp = _set_header(connection.respond(HTTPStatus.OK, ""), "Content-Type", content_type)
    _set_header(resp, "Content-Length", str(len(body)))
    _set_header(resp, "Cache-Control", cache)
    return dataclasses.replace(resp, body=body)


async def _answers_ping(ws: ServerConnection, timeout: float) -> bool:
    try:
        pong = await ws.ping()
        await asyncio.wait_for(pong, timeout)
        return True
    except (ConnectionClosed, TimeoutError):
        return False


async def _drain(ws: ServerConnection, q: asyncio.Queue) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await ws.send(await q.get())
