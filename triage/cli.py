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
                        max_calls=getattr(args, "max_calls", 500), key_prefix=_key_prefix(args))


def cmd_serve(args) -> int:
    import asyncio

    from triage.app import DEFAULT_DATA_DIR, run, serve_workers

    model = _load_model(args)
    redis_url, data_dir = args.redis_url or os.environ.get("REDIS_URL"), args.data_dir or DEFAULT_DATA_DIR
    try:
        if args.workers > 1:
            return serve_workers(_server_config(args), model, redis_url, data_dir, args.workers)
        return asyncio.run(run(_server_config(args), model, redis_url, data_dir))
    except RuntimeError as e:
        _err(str(e))
        return 1


def cmd_demo(args) -> int:
    import asyncio
    from dataclasses import replace

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
        return asyncio.run(run(config, model, args.redis_url or os.environ.get("REDIS_URL"), data_dir, demo,
                               dashboard_token=dashboard_token))
    except RuntimeError as e:
        _err(str(e))
        return 1


def cmd_call(args) -> int:
    import asyncio

    from triage import client

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
            asyncio.run(client.stream_microphone(args.url, token, show, cafile=args.cafile))
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
        failed = [r for r in asyncio.run(many()) if isinstance(r, BaseException)]
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


def cmd_dispatch(args) -> int:
    import asyncio

    from triage.dispatch import console

    url = args.redis_url or os.environ.get("REDIS_URL")
    if not url:
        _err("dispatch needs the service's Redis: --redis-url URL or REDIS_URL (triage serve prints it)")
        return 2
    return asyncio.run(console(url, args.service, _console_dispatcher(args), _key_prefix(args)))


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
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
