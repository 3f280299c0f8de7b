"""`triage` command line: thin adapters around the pure core. stdout carries results only."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from triage.audio import AudioError


def _err(msg: str) -> None:
    print(f"triage: {msg}", file=sys.stderr, flush=True)


def _load_model(args):
    from triage.model import KeywordModel, ModelError

    try:
        return KeywordModel(args.model)
    except ModelError as e:
        _err(str(e))
        raise SystemExit(3) from None


def _progress(items, desc: str, show: bool):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", disable=not show, file=sys.stderr)


def cmd_classify(args) -> int:
    from triage.audio import read_wav_16k
    from triage.classify import classify

    model = _load_model(args)
    failed = 0
    for f in _progress(args.files, "classifying", len(args.files) > 20):
        try:
            result = classify(model, read_wav_16k(f))
        except AudioError as e:
            _err(str(e))
            failed += 1
            continue
        if args.json:
            print(json.dumps({"file": f, "label": result.label, "confidence": round(result.confidence, 4)},
                             ensure_ascii=False), flush=True)
        else:
            print(f"{f}\t{result.label}\t{result.confidence:.3f}", flush=True)
    return 1 if failed else 0


def cmd_replay(args) -> int:
    from triage.audio import read_blocks_16k
    from triage.replay import load_labels, replay_blocks, score, write_report

    model = _load_model(args)
    try:
        labels = load_labels(args.labels) if args.labels else None
    except (OSError, ValueError) as e:
        _err(str(e))
        return 2
    results, failed = [], 0
    for f in _progress(args.files, "replaying", len(args.files) > 1):
        try:
            r = replay_blocks(model, read_blocks_16k(f), f, trace=args.report is not None)
        except AudioError as e:
            _err(str(e))
            failed += 1
            continue
        results.append(r)
        if args.json:
            print(json.dumps(r.to_json(), ensure_ascii=False), flush=True)
        else:
            dets = ", ".join(f"{d.keyword}@{d.time:.1f}s({d.confidence:.2f})" for d in r.detections) or "-"
            print(f"{f}\tservices {r.services or '-'}\t{dets}", flush=True)
    metrics = score(results, labels) if labels else None
    if metrics is not None:
        _err("metrics: " + json.dumps(metrics.summary()))
    if args.report is not None:
        out = write_report(args.report, model, results, labels, metrics)
        _err(f"report written to {out}")
    return 1 if failed else 0


def _key_prefix(args) -> str:
    from triage.store import DEFAULT_PREFIX

    return args.key_prefix or os.environ.get("TRIAGE_KEY_PREFIX") or DEFAULT_PREFIX


def _server_config(args):
    from triage.server import ServerConfig

    if bool(args.certfile) != bool(args.keyfile):
        raise SystemExit("triage: error: --certfile and --keyfile go together")
    users = args.users or os.environ.get("TRIAGE_USERS")
    return ServerConfig(host=args.host, port=args.port, token=args.token or os.environ.get("TRIAGE_TOKEN"),
                        users_file=Path(users) if users else None, certfile=args.certfile, keyfile=args.keyfile,
                        max_calls=getattr(args, "max_calls", 500), key_prefix=_key_prefix(args),
                        record_dir=getattr(args, "record", None), retention_days=getattr(args, "retention_days", 30.0),
                        audit_dir=getattr(args, "audit_dir", None),
                        score_interval_s=getattr(args, "score_interval", None) or ServerConfig.score_interval_s)


def _score_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.01 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: the scoring interval is 0.01 to 1 s")
    return value


def cmd_serve(args) -> int:
    from triage import eventloop
    from triage.app import DEFAULT_DATA_DIR, run, serve_workers

    model = _load_model(args)
    redis_url, data_dir = args.redis_url or os.environ.get("REDIS_URL"), args.data_dir or DEFAULT_DATA_DIR
    try:
        if args.workers > 1:
            return serve_workers(_server_config(args), model, redis_url, data_dir, args.workers)
        return eventloop.run(run(_server_config(args), model, redis_url, data_dir))
    except RuntimeError as e:
        _err(str(e))
        return 1


def cmd_demo(args) -> int:
    from dataclasses import replace

    from triage import eventloop
    from triage.app import DEFAULT_DATA_DIR, run
    from triage.demo import demo_credentials, loop_demo_calls

    model = _load_model(args)
    config = _server_config(args)
    data_dir = args.data_dir or DEFAULT_DATA_DIR / "demo"
    dashboard_token = None
    if not (config.token or config.users_file):
        token, dashboard_token = demo_credentials(data_dir / "users.json")
        config = replace(config, token=token, users_file=data_dir / "users.json")

    async def demo(server):
        scheme = "wss" if config.certfile else "ws"
        await loop_demo_calls(f"{scheme}://{config.host}:{config.port}/call", config.token, rounds=args.rounds,
                              cafile=str(config.certfile) if config.certfile else None)

    try:
        return eventloop.run(run(config, model, args.redis_url or os.environ.get("REDIS_URL"), data_dir, demo,
                                 dashboard_token=dashboard_token))
    except RuntimeError as e:
        _err(str(e))
        return 1


def cmd_call(args) -> int:
    import asyncio

    from triage import client, eventloop

    def show(ev: dict) -> None:
        if args.json:
            print(json.dumps(ev, ensure_ascii=False), flush=True)
            return
        kind = ev.get("type")
        if kind == "detection":
            print(f"  [{ev['time']:6.1f} s] heard « {ev['keyword']} » → {ev['service']} "
                  f"(confidence {ev['confidence']:.2f})", flush=True)
        elif kind == "route":
            print(f"  ROUTE → {' + '.join(str(s) for s in ev['services'])}", flush=True)
        elif kind == "ready":
            print(f"call {ev['call_id']} connected" + (" (resumed)" if ev.get("resumed") else ""), flush=True)
        elif kind == "summary":
            print(f"call ended after {ev['duration']:.1f} s: services {ev['services'] or 'none'}", flush=True)
        elif kind in ("reconnecting", "warning", "store_recovered", "error"):
            _err(f"{kind}: {ev.get('reason') or ev.get('message')}")

    token = args.token or os.environ.get("TRIAGE_TOKEN")
    try:
        if args.mic:
            eventloop.run(client.stream_microphone(args.url, token, show, cafile=args.cafile))
            return 0
        if args.say:
            samples, rate = client.synthesize(args.say)
        elif args.file:
            samples, rate = client.load_audio(args.file)
        else:
            _err("give a FILE, --say TEXT or --mic")
            return 2
        data, width = client.prepare(samples, rate, args.encoding, args.rate)

        async def many():
            return await asyncio.gather(*(client.stream_call(
                args.url, data, width, args.rate, args.encoding, speed=args.speed, token=token, cafile=args.cafile,
                metadata={"source": args.file or "say", **({"caller": f"sim-{i}"} if args.calls > 1 else {})},
                on_event=show) for i in range(args.calls)), return_exceptions=True)
        failed = [r for r in eventloop.run(many()) if isinstance(r, BaseException)]
        for r in failed:
            if not isinstance(r, client.CallFailed):
                raise r
        if failed and args.calls > 1:
            _err(f"{len(failed)} of {args.calls} calls failed; first: {failed[0]}")
            return 1
        if failed:
            raise failed[0]
        return 0
    except client.CallFailed as e:
        _err(str(e))
        return 1
    except KeyboardInterrupt:
        return 130


def _users_file(args):
    from triage.credentials import CredentialFile

    path = args.file or os.environ.get("TRIAGE_USERS")
    if not path:
        raise SystemExit("triage: error: give --file or set TRIAGE_USERS (the file `triage serve --users` reads)")
    return CredentialFile(Path(path))


def cmd_users(args) -> int:
    import time

    from triage.credentials import CredentialError, Credentials

    file = _users_file(args)
    try:
        creds = Credentials(file.users())
        if args.action == "list":
            now = time.time()
            for name, u in sorted(creds.users.items()):
                expires = u.get("expires")
                state = "" if expires is None else (" EXPIRED" if expires <= now else
                                                    f" expires {time.strftime('%Y-%m-%d', time.gmtime(expires))}")
                print(f"{name}\t{u['role']}\tcreated {time.strftime('%Y-%m-%d', time.gmtime(u['created']))}{state}")
            return 0
        if args.action == "add":
            token = creds.add(args.name, args.role, time.time(), args.expires_days)
            file.save(creds.users)
            print(token)
            _err(f"{args.role} {args.name!r} added to {file.path}; the token above is shown only once")
            return 0
        creds.remove(args.name)
        file.save(creds.users)
        _err(f"{args.name!r} removed from {file.path}; a running server refuses it from its next connection")
        return 0
    except CredentialError as e:
        _err(str(e))
        return 1


def _console_dispatcher(args) -> str | None:
    """The console's dispatcher name: from a dispatcher credential when a users file is configured
    (as on the server, never typed), else --name or the login. Raises SystemExit with the reason."""
    import time

    from triage.credentials import CredentialError, CredentialFile, Credentials

    users = args.users or os.environ.get("TRIAGE_USERS")
    if not users:
        return args.name
    if args.name:
        raise SystemExit("triage: error: with a users file the name comes from your credential; drop --name")
    try:
        creds = Credentials(CredentialFile(Path(users)).users(), required=True)
    except CredentialError as e:
        raise SystemExit(f"triage: error: {e}") from None
    admission = creds.admit(args.token or os.environ.get("TRIAGE_DISPATCHER_TOKEN"), "dispatcher", time.time())
    if admission.status != 200:
        raise SystemExit(f"triage: error: {admission.message} (give your dispatcher credential with --token "
                         f"or TRIAGE_DISPATCHER_TOKEN)")
    return admission.identity.name


def _redis_url(args, what: str) -> str:
    url = args.redis_url or os.environ.get("REDIS_URL")
    if not url:
        raise SystemExit(f"triage: error: {what} needs the service's Redis: --redis-url URL or REDIS_URL "
                         "(triage serve prints it)")
    return url


def _with_store(args, what: str, work):
    """Run `work(store)` against the service's Redis; a Redis that is not there is a clear error."""
    from redis.exceptions import RedisError

    from triage import eventloop
    from triage.store import RouteStore

    async def main():
        store = RouteStore(_redis_url(args, what), prefix=_key_prefix(args))
        try:
            return await work(store)
        finally:
            await store.close()
    try:
        return eventloop.run(main())
    except (RedisError, OSError) as e:
        raise SystemExit(f"triage: error: Redis at {_redis_url(args, what)} not reachable: {e}") from None


def cmd_recordings(args) -> int:
    import time

    from triage.recording import RecordingError, Recordings

    if not args.dir.is_dir():
        _err(f"{args.dir}: no such recordings directory")
        return 2
    rec = Recordings(args.dir)
    if args.action == "list":
        for c in rec.calls():
            try:
                length = f"{rec.duration(c.call_id):.1f} s"
            except RecordingError:
                length = "no audio"
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(c.started_at))
            print(f"{c.call_id}\t{started} UTC\t{length}\t{c.encoding} {c.sample_rate} Hz\t{c.model}")
        return 0
    if not args.call and args.older_than_days is None:
        _err("purge what? give call ids (a deletion request) or --older-than-days N")
        return 2
    gone = [c for c in args.call if rec.purge(c)]
    for c in set(args.call) - set(gone):
        _err(f"no recording of call {c!r} in {args.dir}")
    if args.older_than_days is not None:
        gone += rec.purge_expired(args.older_than_days)
    for c in gone:
        print(c)
    _err(f"{len(gone)} recordings deleted from {args.dir}")
    return 0 if len(gone) >= len(set(args.call)) else 1


def cmd_feedback(args) -> int:
    from triage import feedback
    from triage.recording import RecordingError, Recordings

    model = _load_model(args)
    window_s = model.features.window_samples / model.features.sample_rate
    calls = _with_store(args, "feedback export", lambda store: store.reviews())
    rec = Recordings(args.recordings)
    args.out.mkdir(parents=True, exist_ok=True)
    lines, skipped = [], []
    for c in _progress(calls, "exporting reviewed calls", sys.stderr.isatty()):
        try:
            rec.export_audio(c.call_id, args.out / f"{c.call_id}.wav")
        except RecordingError as e:
            skipped.append(f"{c.call_id} ({e})")
            continue
        lines.append(feedback.label(c, window_s, f"{c.call_id}.wav"))
    (args.out / "labels.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines),
                                           encoding="utf-8")
    for s in skipped:
        _err(f"skipped, not recorded: {s}")
    _err(f"{len(lines)} reviewed calls exported to {args.out} (labels.jsonl); measure with: triage replay "
         f"{args.out}/*.wav --labels {args.out}/labels.jsonl")
    return 0 if lines or not calls else 1


def cmd_report(args) -> int:
    from triage import feedback

    rep = feedback.report(_with_store(args, "report", lambda store: store.reviews()))
    if args.json:
        print(json.dumps(rep, ensure_ascii=False))
    if args.html:
        from triage.report import write_html

        _err(f"report written to {write_html(rep, args.html)}")
    if not args.json and not args.html:
        o = rep["overall"]
        print(f"{o['calls']} reviewed calls, {o['hours']} h; route exact match {o['route_exact_match']}; "
              f"false alarms per hour {o['false_alarms_per_hour']}; use --html FILE or --json for the rest")
    return 0


def cmd_audit(args) -> int:
    import datetime as dt

    from triage import audit

    async def work(store):
        if args.day:
            return [await audit.export_day(store, args.day, args.dir)]
        return await audit.export_finished_days(store, args.dir, dt.datetime.now(dt.UTC).date())

    for path, n in _with_store(args, "audit export", work):
        print(f"{path}\t{n}")
    return 0


def cmd_adapt(args) -> int:
    from triage import adapt

    model = _load_model(args)
    try:
        a = adapt.adapt(args.dataset, model, args.out, held_out=args.held_out, seed=args.seed,
                        reference=None if args.no_reference else (args.reference or adapt.REFERENCE), l2=args.l2,
                        shuffle_labels=args.shuffle_labels, progress=_err)
    except (adapt.AdaptError, ValueError, AudioError) as e:
        _err(str(e))
        return 2
    print(json.dumps({"model": str(a.model_path), "card": str(a.card_path), "held_out": a.held_out.__dict__,
                      "reference": a.reference.__dict__ if a.reference else None, "refusals": a.refusals,
                      "thresholds": {k: v["threshold"] for k, v in a.thresholds.items()}}, ensure_ascii=False))
    for reason in a.refusals:
        _err(f"refused: {reason}")
    if a.refusals:
        _err(f"{a.model_path} is kept for inspection ({a.card_path}) but must not be served")
        return 1
    if args.promote:
        target = adapt.promote(a, model.path)
        _err(f"promoted to {target} (the previous model kept as {target.with_suffix('.previous.onnx').name}); "
             f"a running `triage serve` loads it on SIGHUP: kill -HUP <pid of triage serve>")
    else:
        _err(f"accepted: {a.model_path}; serve it with --model, or run again with --promote")
    return 0


def cmd_dispatch(args) -> int:
    from triage import eventloop
    from triage.dispatch import console

    return eventloop.run(console(_redis_url(args, "dispatch"), args.service, _console_dispatcher(args),
                                 _key_prefix(args)))


def _date(text: str):
    import datetime as dt

    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triage",
        description="Route French emergency calls to SAMU (15), police (17) or pompiers (18) by spotting "
                    "keywords in the caller's speech.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def model_arg(p):
        p.add_argument("--model", type=Path, default=None,
                       help="ONNX model with its .json manifest beside it (default: models/kws12.onnx)")

    p = sub.add_parser("classify", help="label short clips: one of the 12 keywords, _unknown_ or _silence_",
                       description="Label each WAV clip (any rate; PCM16, float32, mu-law, A-law). "
                                   "One result per line, in order; unreadable files are reported on stderr "
                                   "and make the exit status 1.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="JSON lines: file, label, confidence")
    model_arg(p)
    p.set_defaults(run=cmd_classify)

    p = sub.add_parser("replay", help="run recorded calls through the live core: detections and routes",
                       description="Replay recorded calls (WAV, any rate and encoding) through exactly the live "
                                   "spotter and router, faster than real time.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="JSON lines: file, services, detections")
    p.add_argument("--labels", type=Path, help="JSON-lines labels; prints metrics on stderr")
    p.add_argument("--report", type=Path, metavar="DIR", help="write an HTML report with a timeline per call")
    model_arg(p)
    p.set_defaults(run=cmd_replay)

    def key_prefix_arg(p):
        p.add_argument("--key-prefix", default=None,
                       help="start of every Redis key (default: TRIAGE_KEY_PREFIX, else triage:); on Redis "
                            "Cluster use a hash tag such as '{triage}:' so each script's keys share a slot")

    def server_args(p):
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8765)
        p.add_argument("--redis-url", help="Redis to route into (default: REDIS_URL, else an embedded server)")
        p.add_argument("--token", help="ingest credential required on /call (default: TRIAGE_TOKEN)")
        p.add_argument("--users", metavar="FILE", help="ingest and dispatcher credentials made with `triage users "
                                                       "add` (default: TRIAGE_USERS); re-read when it changes")
        p.add_argument("--certfile", type=Path, help="TLS certificate chain (PEM): serve wss:// and https://")
        p.add_argument("--keyfile", type=Path, help="TLS private key (PEM) of --certfile")
        p.add_argument("--data-dir", type=Path, help="embedded Redis data directory")
        key_prefix_arg(p)
        model_arg(p)

    p = sub.add_parser("serve", help="run the live service: /call ingest, Redis routing, dashboard",
                       description="Run the live service: websocket /call (audio in), /feed (events out), "
                                   "GET / (dashboard), /healthz, /metrics.")
    server_args(p)
    p.add_argument("--max-calls", type=int, default=500,
                   help="live calls per worker before new ones get HTTP 503")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes sharing the port, all routing into the same Redis (default: one per CPU core)")
    p.add_argument("--score-interval", type=_score_interval, default=None, metavar="S",
                   help="seconds between scoring ticks (default 0.03, ServerConfig.score_interval_s): "
                        "shorter ones detect sooner, each scoring the calls whose next window is complete "
                        "(BENCHMARKS.md)")
    p.add_argument("--record", type=Path, metavar="DIR",
                   help="opt-in: keep each call's audio (the line's own encoding), events and feedback in DIR")
    p.add_argument("--retention-days", type=float, default=30.0,
                   help="with --record: recordings older than this are deleted (default 30)")
    p.add_argument("--audit-dir", type=Path, metavar="DIR",
                   help="export each finished UTC day of the audit log to DIR/audit-YYYY-MM-DD.jsonl")
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser("demo", help="serve and loop the bundled demo calls; open the printed dashboard URL",
                       description="Start the service with an embedded Redis and send the bundled demo calls "
                                   "to it in a loop, so that the dashboard shows calls arriving and being routed.")
    server_args(p)
    p.add_argument("--rounds", type=int, default=0, help="times to play the demo calls (0: until Ctrl-C)")
    p.set_defaults(run=cmd_demo)

    p = sub.add_parser("call", help="stream a WAV file, a sentence (--say) or the microphone (--mic) as a call",
                       description="Simulated caller: streams audio in real time over /call and prints "
                                   "detections and routes as they arrive.")
    p.add_argument("file", nargs="?", metavar="FILE")
    p.add_argument("--say", metavar="TEXT", help="synthesize this French sentence and stream it")
    p.add_argument("--mic", action="store_true", help="stream the default microphone")
    p.add_argument("--url", default="ws://127.0.0.1:8765/call")
    p.add_argument("--speed", type=float, default=1.0, help="send N times faster than real time")
    p.add_argument("--encoding", default="mulaw", choices=["mulaw", "alaw", "pcm_s16le", "f32le"],
                   help="line encoding (default: mulaw, like a phone line)")
    p.add_argument("--rate", type=int, default=8000, help="line sample rate (default 8000)")
    p.add_argument("--calls", type=int, default=1, help="run N such calls at once")
    p.add_argument("--token", help="ingest credential (default: TRIAGE_TOKEN)")
    p.add_argument("--cafile", help="certificate (PEM) to trust for a wss:// server with a private or "
                                    "self-signed certificate")
    p.add_argument("--json", action="store_true", help="print every server event as a JSON line")
    p.set_defaults(run=cmd_call)

    p = sub.add_parser("users", help="add, list or remove ingest and dispatcher credentials",
                       description="Credentials for `triage serve --users FILE`: ingest ones stream calls on /call "
                                   "(telephony gateways), dispatcher ones open the dashboard and act under their "
                                   "name. Only a hash of each token is stored; the token is printed once.")
    users = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("add", "issue a credential; prints its token"), ("list", "names, roles, expiry"),
                         ("remove", "revoke a credential")):
        q = users.add_parser(action, help=text, description=text)
        q.add_argument("--file", help="users file (default: TRIAGE_USERS)")
        if action != "list":
            q.add_argument("name")
        if action == "add":
            q.add_argument("--role", default="dispatcher", choices=["dispatcher", "ingest"])
            q.add_argument("--expires-days", type=float, help="refuse the credential after this many days")
        q.set_defaults(run=cmd_users)

    p = sub.add_parser("recordings", help="list or delete call recordings (triage serve --record DIR)",
                       description="Recordings kept by `triage serve --record DIR`. `purge` deletes calls on "
                                   "request, or every recording older than a number of days.")
    rec = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = rec.add_parser("list", help="call id, start (UTC), length, encoding, model",
                       description="One recorded call per line: call id, start (UTC), length, encoding, model.")
    q.add_argument("--dir", type=Path, required=True, help="the --record directory")
    q.set_defaults(run=cmd_recordings)
    q = rec.add_parser("purge", help="delete recordings: these calls, or all older than N days",
                       description="Delete recordings: the calls named (a deletion request), and/or every "
                                   "recording that started more than --older-than-days ago.")
    q.add_argument("call", nargs="*", help="call ids to delete")
    q.add_argument("--dir", type=Path, required=True, help="the --record directory")
    q.add_argument("--older-than-days", type=float, help="also delete every recording older than this")
    q.set_defaults(run=cmd_recordings)

    def redis_args(p):
        p.add_argument("--redis-url", help="the service's Redis (default: REDIS_URL)")
        key_prefix_arg(p)

    p = sub.add_parser("feedback", help="export reviewed, recorded calls as a labelled dataset",
                       description="Dispatchers' feedback turned into data.")
    fb = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = fb.add_parser("export", help="reviewed calls' audio + labels.jsonl for `triage replay --labels`",
                      description="Every call a dispatcher reviewed and that was recorded: its audio as OUT/<id>.wav "
                                  "(the line's encoding) and one line of OUT/labels.jsonl in the format `triage replay "
                                  "--labels` reads. Detections not marked wrong are labelled as said (ending when "
                                  "they fired, starting one model window before); keywords marked missed span ±1 s "
                                  "around the time the dispatcher gave.")
    q.add_argument("out", type=Path, metavar="OUT")
    q.add_argument("--recordings", type=Path, required=True, metavar="DIR", help="the --record directory")
    redis_args(q)
    model_arg(q)
    q.set_defaults(run=cmd_feedback)

    p = sub.add_parser("report", help="accuracy on this centre's reviewed calls, per keyword, service and model",
                       description="From dispatchers' feedback: per service and per keyword precision and recall, "
                                   "false alarms per hour, time to the first correct route, and their trend per "
                                   "model version.")
    p.add_argument("--html", type=Path, metavar="FILE", help="write an HTML page with plots")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    redis_args(p)
    p.set_defaults(run=cmd_report)

    p = sub.add_parser("audit", help="export the audit log (model decisions and dispatcher actions) as JSON lines",
                       description="The audit log keeps every detection and route (with model version and "
                                   "confidence) and every dispatcher action. `export` writes one file per UTC day.")
    au = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = au.add_parser("export", help="DIR/audit-YYYY-MM-DD.jsonl for one day, or every finished day not yet exported",
                      description="Write DIR/audit-YYYY-MM-DD.jsonl for --day (today included, as far as it went), "
                                  "or for every finished UTC day that has no file yet.")
    q.add_argument("dir", type=Path, metavar="DIR")
    q.add_argument("--day", type=_date, help="YYYY-MM-DD (UTC)")
    redis_args(q)
    q.set_defaults(run=cmd_audit)

    p = sub.add_parser("adapt", help="fit the model to a centre's labelled calls; promote it only if not worse",
                       description="Refit the keyword model's last layer on a centre's labelled calls (DATASET: "
                                   "WAV calls + labels.jsonl, as `triage feedback export` writes), re-set its "
                                   "thresholds there, and measure it against the shipped model on held-out calls "
                                   "of DATASET and on the project's reference calls. Exit 0 when it is not worse "
                                   "on either, 1 when refused (the reasons on stderr), 2 on bad input.")
    p.add_argument("dataset", type=Path, metavar="DATASET")
    p.add_argument("--out", type=Path, default=Path("models") / "adapted",
                   help="where the adapted model (ONNX + manifest + model card) is written (default: models/adapted)")
    p.add_argument("--held-out", type=float, default=0.3, help="share of DATASET's calls kept out to measure (0.3)")
    p.add_argument("--seed", type=int, default=0, help="of the held-out split")
    p.add_argument("--reference", type=Path, default=None,
                   help="labelled calls the adapted model must not do worse on (default: models/reference)")
    p.add_argument("--no-reference", action="store_true", help="guard with DATASET's held-out calls only")
    p.add_argument("--l2", type=float, default=0.05, help="pull toward the shipped weights (0.05)")
    p.add_argument("--shuffle-labels", action="store_true",
                   help="control run: labels given to the wrong calls; the result must be refused")
    p.add_argument("--promote", action="store_true",
                   help="when accepted, replace the --model files (the previous ones kept as .previous)")
    model_arg(p)
    p.set_defaults(run=cmd_adapt)

    p = sub.add_parser("dispatch", help="terminal dispatcher console for one service's queue",
                       description="Take the next call of a service's queue, then acknowledge or re-route it.")
    p.add_argument("--service", type=int, required=True, choices=[15, 17, 18])
    p.add_argument("--name", default=None, help="dispatcher name when no users file is configured "
                                                "(default: your login)")
    p.add_argument("--users", metavar="FILE", help="the server's users file (default: TRIAGE_USERS): your name "
                                                   "then comes from your dispatcher credential")
    p.add_argument("--token", help="your dispatcher credential (default: TRIAGE_DISPATCHER_TOKEN)")
    p.add_argument("--redis-url")
    key_prefix_arg(p)
    p.set_defaults(run=cmd_dispatch)
    return parser


def main(argv: list[str] | None = None) -> int:
    from triage.eventloop import EventLoopError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except EventLoopError as e:
        _err(str(e))
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
