"""Roles and identity: ingest credentials stream calls, dispatcher credentials watch and act under their
own name; the pure rules first, then a live server over real websockets and Redis, then TLS."""

import asyncio
import json
import stat
import time

import numpy as np
import pytest
from livekit import collect, dispatcher_actions, http_get, live, mulaw_frames, send_audio, start_call
from onnx_models import silence, tone
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from triage import client
from triage.cli import main
from triage.credentials import CredentialError, CredentialFile, Credentials
from triage.model import KeywordModel
from triage.server import ServerConfig, TriageServer
from triage.store import RouteStore

NOW = 1_800_000_000.0


def test_each_credential_admits_its_own_role_only():
    creds = Credentials(ingest_token="gateway-secret")
    alice = creds.add("alice", "dispatcher", NOW)
    gw = creds.add("gw-2", "ingest", NOW)
    old = creds.add("bob", "dispatcher", NOW, expires_days=1)
    assert creds.admit(alice, "dispatcher", NOW).identity.name == "alice"
    assert creds.admit(gw, "ingest", NOW).identity.name == "gw-2"
    assert creds.admit("gateway-secret", "ingest", NOW).status == 200
    assert creds.admit("gateway-secret", "dispatcher", NOW).status == 403
    assert creds.admit(alice, "ingest", NOW).status == 403
    assert creds.admit(None, "dispatcher", NOW).status == 401
    assert creds.admit("guess", "dispatcher", NOW).message == "unknown credential"
    assert creds.admit(old, "dispatcher", NOW + 3600).identity.name == "bob"
    assert creds.admit(old, "dispatcher", NOW + 86400).message == "credential expired"
    creds.remove("alice")
    assert creds.admit(alice, "dispatcher", NOW).status == 401
    assert Credentials().admit(None, "dispatcher", NOW) == Credentials().admit("x", "ingest", NOW)  # open
    assert Credentials().admit(None, "dispatcher", NOW).identity is None


def test_names_roles_and_duplicates_are_checked():
    creds = Credentials()
    creds.add("émilie.d@samu-75", "dispatcher", NOW)
    for name, role in (("", "dispatcher"), ("a b", "dispatcher"), ("x" * 65, "dispatcher"), ("<b>", "dispatcher"),
                       ("alice\n", "dispatcher"),
                       ("carol", "admin"), ("émilie.d@samu-75", "dispatcher")):
        with pytest.raises(CredentialError):
            creds.add(name, role, NOW)
    with pytest.raises(CredentialError, match="no user 'zoe'"):
        creds.remove("zoe")


def test_users_file_keeps_only_hashes_is_private_and_is_reread(tmp_path):
    file = CredentialFile(tmp_path / "users.json")
    assert file.users() == {}
    creds = Credentials()
    token = creds.add("alice", "dispatcher", NOW)
    file.save(creds.users)
    assert token not in file.path.read_text()
    assert stat.S_IMODE(file.path.stat().st_mode) == 0o600
    assert set(file.users()) == {"alice"}
    other = CredentialFile(file.path)  # the running server's view
    assert Credentials(other.users()).admit(token, "dispatcher", NOW).status == 200
    creds.remove("alice")
    file.save(creds.users)
    assert other.users() == {}
    # the server's view of an emptied file: closed, not open
    assert Credentials(other.users(), required=True).admit(token, "dispatcher", NOW).status == 401
    file.path.write_text("{not json")
    with pytest.raises(CredentialError, match="users.json: not a triage users file"):
        CredentialFile(file.path).users()


def test_users_command_adds_lists_and_removes(tmp_path, capsys):
    path = str(tmp_path / "u.json")
    assert main(["users", "add", "alice", "--file", path]) == 0
    token = capsys.readouterr().out.strip()
    assert main(["users", "add", "gw", "--role", "ingest", "--expires-days", "30", "--file", path]) == 0
    capsys.readouterr()
    assert main(["users", "list", "--file", path]) == 0
    listing = capsys.readouterr().out
    assert "alice\tdispatcher" in listing and "gw\tingest" in listing and "expires" in listing
    assert token not in listing
    assert main(["users", "add", "alice", "--file", path]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["users", "remove", "alice", "--file", path]) == 0
    assert main(["users", "remove", "alice", "--file", path]) == 1
    assert "no user 'alice'" in capsys.readouterr().err


@pytest.mark.parametrize("config", [{}, {"token": "x"}])
def test_refuses_to_listen_beyond_loopback_without_both_roles(loud_model_path, config):
    server = TriageServer(KeywordModel(loud_model_path), RouteStore("redis://127.0.0.1:1/0"),
                          ServerConfig(host="0.0.0.0", port=0, **config))
    with pytest.raises(RuntimeError, match="refusing to listen on 0.0.0.0 without credentials"):
        asyncio.run(server.start())


def test_roles_are_enforced_before_the_upgrade_and_actions_carry_the_credential_name(
        loud_model_path, redis_server, rdb, tmp_path):
    file = CredentialFile(tmp_path / "users.json")
    creds = Credentials()
    alice = creds.add("alice", "dispatcher", time.time())
    gw = creds.add("gw", "ingest", time.time())
    expired = creds.add("old", "dispatcher", time.time() - 2 * 86400, expires_days=1)
    file.save(creds.users)

    async def status(url, **kw):
        try:
            ws = await connect(url, **kw)
        except InvalidStatus as e:
            return e.response.status_code, e.response.body.decode().strip()
        await ws.close()
        return 101, ""

    async def scenario(server, base):
        port = server.config.port
        got = {
            "call, none": await status(base + "/call"),
            "call, dispatcher": await status(base + f"/call?token={alice}"),
            "feed, ingest": await status(base + "/feed?token=ingest-secret"),
            "feed, gateway": await status(base + "/feed", additional_headers={"Authorization": f"Bearer {gw}"}),
            "feed, expired": await status(base + f"/feed?token={expired}"),
            "whoami": await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/whoami?token={alice}"),
            "whoami, ingest": (await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/whoami",
                                                       {"Authorization": "Bearer ingest-secret"}))[0],
        }
        ws, ready = await start_call(base + f"/call?token={gw}", "who-1")
        await send_audio(ws, mulaw_frames(np.concatenate([tone(0.9, rate=8000), silence(1.0, 8000)])))
        await ws.send(json.dumps({"type": "stop"}))
        await collect(ws, "summary")
        feed = await connect(base + f"/feed?token={alice}")
        snapshot = json.loads(await feed.recv())
        await feed.send(json.dumps({"type": "claim", "call_id": "who-1", "service": 18, "dispatcher": "mallory"}))
        result = (await collect(feed, "action_result"))[-1]
        await feed.close()
        creds.remove("alice")
        file.save(creds.users)
        got["feed, revoked"] = await status(base + f"/feed?token={alice}")
        return got, snapshot, result

    got, snapshot, result = live(loud_model_path, redis_server.url, scenario, token="ingest-secret",
                                 users_file=file.path)
    assert got["call, none"][0] == 401
    assert got["call, dispatcher"] == (403, "a dispatcher credential cannot be used for ingest")
    assert got["feed, ingest"] == (403, "a ingest credential cannot be used for dispatcher")
    assert got["feed, gateway"][0] == 403
    assert got["feed, expired"] == (401, "credential expired")
    assert got["whoami"][0] == 200 and json.loads(got["whoami"][1]) == {"dispatcher": "alice"}
    assert got["whoami, ingest"] == 403
    assert got["feed, revoked"] == (401, "unknown credential")
    assert snapshot["dispatcher"] == "alice" and result["ok"]
    assert rdb.hget("triage:call:who-1", "claimed_by:18") == "alice"
    assert [a["dispatcher"] for a in dispatcher_actions(rdb)] == ["alice"]


def test_calls_and_the_feed_work_over_tls_with_a_self_signed_certificate(loud_model_path, redis_server, rdb,
                                                                         self_signed):
    import ssl
    import urllib.request

    cert, key = self_signed
    audio = np.concatenate([silence(0.5, 8000), tone(0.9, rate=8000), silence(1.0, 8000)])
    data, width = client.prepare(audio, 8000, "mulaw", 8000)

    async def scenario(server, base):
        port = server.config.port
        url = f"wss://127.0.0.1:{port}/call"
        summary = await client.stream_call(url, data, width, 8000, "mulaw", speed=20, call_id="tls-1",
                                           cafile=str(cert))
        with pytest.raises(client.CallFailed, match="needs --cafile"):
            await client.stream_call(url, data, width, 8000, "mulaw", call_id="tls-2")
        ctx = ssl.create_default_context(cafile=str(cert))
        feed = await connect(f"wss://127.0.0.1:{port}/feed", ssl=ctx)
        snapshot = json.loads(await feed.recv())
        await feed.close()
        page = await asyncio.to_thread(lambda: urllib.request.urlopen(f"https://127.0.0.1:{port}/",
                                                                      context=ctx).read())
        return summary, snapshot, page

    summary, snapshot, page = live(loud_model_path, redis_server.url, scenario, certfile=cert, keyfile=key)
    assert summary["services"] == [18]
    assert snapshot["type"] == "snapshot"
    assert b"<title>triage" in page
    assert rdb.xlen("triage:queue:18") == 1


def test_console_dispatcher_is_named_by_its_credential_when_users_are_configured(tmp_path, monkeypatch):
    import argparse

    from triage.cli import _console_dispatcher

    monkeypatch.delenv("TRIAGE_USERS", raising=False)
    monkeypatch.delenv("TRIAGE_DISPATCHER_TOKEN", raising=False)
    file = CredentialFile(tmp_path / "users.json")
    creds = Credentials()
    alice = creds.add("alice", "dispatcher", time.time())
    gw = creds.add("gw", "ingest", time.time())
    file.save(creds.users)

    def args(**kw):
        return argparse.Namespace(**{"users": str(file.path), "name": None, "token": None, **kw})
    assert _console_dispatcher(args(token=alice)) == "alice"
    assert _console_dispatcher(args(users=None, name="bob")) == "bob"  # no users file: as before
    for bad, says in ((args(token=alice, name="mallory"), "drop --name"), (args(), "credential is required"),
                      (args(token=gw), "ingest credential cannot"), (args(token="guess"), "unknown credential")):
        with pytest.raises(SystemExit, match=says):
            _console_dispatcher(bad)
