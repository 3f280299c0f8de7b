"""RouteStore against a real Redis-compatible server (embedded Valkey, AOF)."""

import asyncio

import pytest
import redis
from livekit import dispatcher_actions

from triage.embedded_redis import EmbeddedRedis
from triage.store import RouteStore, StoreError


@pytest.fixture
def server(tmp_path):
    with EmbeddedRedis(tmp_path / "r", appendfsync="always") as r:
        yield r


def run(url, scenario, **kw):
    async def main():
        s = RouteStore(url, **kw)
        await s.ensure_groups()
        try:
            return await scenario(s)
        finally:
            await s.close()
    return asyncio.run(main())


def test_route_is_added_once_per_call_and_service(server):
    async def scenario(s):
        ids = [await s.route("c1", 18, ["incendie"], [], 3.0) for _ in range(3)]
        ids += [await s.route("c1", 15, ["malaise"], [], 5.0)]
        return ids, await s.routed_services("c1"), await s.depths()

    ids, services, depths = run(server.url, scenario)
    assert ids[0] and ids[1] is None and ids[2] is None and ids[3]
    assert services == [15, 18] and depths == {15: 1, 17: 0, 18: 1}


def test_claim_ack_and_refusals(server):
    async def scenario(s):
        await s.route("c1", 17, ["vol"], [], 2.0)
        errors = []
        for action in (lambda: s.ack("c1", 17, "alice"),          # not claimed yet
                       lambda: s.claim("nope", 17, "alice"),      # unknown call
                       lambda: s.claim("c1", 18, "alice")):       # not in that queue
            with pytest.raises(StoreError) as e:
                await action()
            errors.append(str(e.value))
        await s.claim("c1", 17, "alice")
        await s.claim("c1", 17, "alice")  # claiming again one's own call is fine
        with pytest.raises(StoreError, match="already claimed by alice"):
            await s.claim("c1", 17, "bob")
        with pytest.raises(StoreError, match="already claimed by alice"):
            await s.ack("c1", 17, "bob")
        await s.ack("c1", 17, "alice")
        with pytest.raises(StoreError, match="already acked"):
            await s.claim("c1", 17, "bob")
        return errors, await s.waiting(17)

    errors, waiting = run(server.url, scenario)
    assert "must be claimed" in errors[0] and "not in the 17 queue" in errors[1] and "not in the 18" in errors[2]
    assert waiting == []


def test_reroute_moves_the_call_and_logs_who_did_it(server):
    async def scenario(s):
        await s.save_call("c1", {"route_keywords": '{"18": ["gaz"]}'})
        await s.route("c1", 18, ["gaz"], [], 2.0, {"caller": "x"})
        await s.claim("c1", 18, "alice")
        with pytest.raises(StoreError, match="expected another"):
            await s.reroute("c1", 18, 18, "alice")
        await s.reroute("c1", 18, 15, "alice")
        return await s.waiting(15), await s.call("c1")

    waiting, call = run(server.url, scenario)
    assert [e.call_id for e, _ in waiting] == ["c1"] and call["state:18"] == "rerouted"
    actions = dispatcher_actions(redis.Redis.from_url(server.url, decode_responses=True))
    assert [(a["action"], a["dispatcher"], a["model_said"]) for a in actions] == [
        ("claim", "alice", '{"18": ["gaz"]}'), ("reroute", "alice", '{"18": ["gaz"]}')]


def test_console_dispatcher_gets_next_and_redelivery_after_a_crash(server):
    async def scenario(s):
        await s.route("a", 15, ["malaise"], [], 1.0)
        await s.route("b", 15, ["brûlure"], [], 1.0)
        first = await s.next_for(15, "crashed-console")  # takes "a", then dies without acking
        await asyncio.sleep(0.15)
        again = await s.next_for(15, "carol")  # "a" is idle past claim_idle_ms: re-delivered to carol
        await s.ack(again.call_id, 15, "carol")
        nxt = await s.next_for(15, "carol")
        return first.call_id, again.call_id, nxt.call_id, await s.next_for(15, "carol")

    assert run(server.url, scenario, claim_idle_ms=100) == ("a", "a", "b", None)


def test_routes_survive_a_redis_crash_with_aof(tmp_path):
    r = EmbeddedRedis(tmp_path / "r", appendfsync="always").start()
    run(r.url, lambda s: s.route("c1", 18, ["incendie"], [], 1.0))
    r.kill()
    r2 = EmbeddedRedis(tmp_path / "r", port=r.port).start()
    try:
        assert run(r2.url, lambda s: s.routed_services("c1")) == [18]
    finally:
        r2.stop()


def test_hash_tagged_prefix_keeps_every_key_in_one_cluster_slot(server):
    """On Redis Cluster a script may only touch keys of one slot: with the prefix `{t}:` every key the
    store writes hashes to the slot of `t`."""
    async def scenario(s):
        await s.save_call("c1", {"state": "live"})
        await s.route("c1", 18, ["incendie"], [], 3.0)
        await s.claim("c1", 18, "alice")
        await s.ack("c1", 18, "alice")
        await s.publish({"type": "route", "call_id": "c1"})
        return await s.routed_services("c1")

    assert run(server.url, scenario, prefix="{t}:") == [18]
    db = redis.Redis.from_url(server.url, decode_responses=True)
    keys = sorted(db.keys("*"))
    assert keys == ["{t}:audit", "{t}:call:c1", "{t}:events", "{t}:queue:15", "{t}:queue:17", "{t}:queue:18"]
    assert len({_slot(k) for k in keys}) == 1


def _slot(key: str) -> int:
    """The Redis Cluster slot of a key (CRC16/XMODEM of its hash tag, mod 16384)."""
    tag = key[key.index("{") + 1: key.index("}", key.index("{"))] if "{" in key and "}" in key else key
    crc = 0
    for byte in tag.encode():
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc % 16384


def test_feedback_carries_the_model_version_and_its_evidence_and_every_action_is_audited(server):
    evidence = '{"18": [{"keyword": "gaz", "time": 4.2, "confidence": 0.97}]}'

    async def scenario(s):
        await s.save_call("c1", {"state": "live", "model": "kws12@abc", "route_evidence": evidence,
                                 "route_keywords": '{"18": ["gaz"]}'})
        await s.record_decision({"type": "detection", "call_id": "c1", "keyword": "gaz", "time": 4.2,
                                 "confidence": 0.97}, "kws12@abc")
        await s.route("c1", 18, ["gaz"], [], 4.2)
        with pytest.raises(StoreError, match="not in the 15 queue: nothing to confirm"):
            await s.confirm("c1", 15, "alice")
        with pytest.raises(StoreError, match="unknown call 'c9'"):
            await s.mark_missed("c9", "vol", 3.0, "alice", 17)
        await s.claim("c1", 18, "alice")
        await s.confirm("c1", 18, "alice")
        await s.mark_missed("c1", "incendie", 9.5, "alice", 18)
        await s.mark_wrong("c1", "gaz", 4.2, "alice", 18)
        await s.ack("c1", 18, "alice")
        return await s.feedback_entries(), await s.audit_entries(), await s.call("c1")

    feedback, audit, call = run(server.url, scenario)
    assert [(f["action"], f["model"], f["evidence"], f["dispatcher"]) for _, f in feedback] == [
        ("confirm", "kws12@abc", evidence, "alice"), ("missed", "kws12@abc", evidence, "alice"),
        ("wrong_detection", "kws12@abc", evidence, "alice")]
    assert (feedback[1][1]["keyword"], feedback[1][1]["said_at"]) == ("incendie", "9.5")
    assert call["confirmed:18"] == "alice" and call["missed:incendie@9.500"] == "alice"
    assert [(a["kind"], a.get("action")) for _, a in audit] == [
        ("detection", None), ("action", "claim"), ("action", "confirm"), ("action", "missed"),
        ("action", "wrong_detection"), ("action", "ack")]
    assert audit[0][1]["model"] == "kws12@abc" and '"confidence": 0.97' in audit[0][1]["event"]
