"""Fuzzing a live server (real websockets, real Redis) with seeded generated and mutated messages while
well-formed calls run beside them: the server stays up, every bad message gets its documented error
and close code, the good calls route exactly as without the fuzz, nothing unhandled is logged, and
nothing is left behind. A failure names its seed: TRIAGE_FUZZ_SEED=<seed> reproduces it."""

import asyncio
import gc
import json
import logging
import os
import random
import struct

import numpy as np
import pytest
from livekit import collect, fire_call, http_get, live
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from triage.protocol import CALL_ID

CLOSE = {"bad_json": 1003, "bad_message": 1002, "unknown_type": 1002, "bad_field": 1002, "bad_sample_rate": 1002,
         "bad_encoding": 1002, "audio_before_start": 1002, "stop_before_start": 1002, "already_started": 1002,
         "bad_audio": 1003}
VALID = {"type": "start", "call_id": "f-0", "sample_rate": 8000, "encoding": "mulaw", "metadata": {"caller": "x"}}
ODD = [None, True, False, 0, -1, 1.5, 10**30, "", " ", "8000", [], [1], {}, {"a": 1}, "\u0000", "<script>x</script>",
       "é" * 300, "x" * 5000, float("1e308")]


class Fuzzer:
    """One seeded source of bad traffic; each case is (frames to send, expected error code or None)."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def blob(self, most: int = 4096) -> bytes:
        n = self.rng.choice([0, 1, 2, 3, 5, 159, 160, 161, self.rng.randrange(most)])
        return self.rng.randbytes(n)

    def audio(self, encoding: str) -> bytes:
        """A frame the call must accept: whole samples, and finite floats for f32le."""
        n = self.rng.randrange(0, 800)
        if encoding == "f32le":
            return np.random.default_rng(self.rng.getrandbits(32)).uniform(-1, 1, n).astype("<f4").tobytes()
        return self.rng.randbytes(n * (2 if encoding == "pcm_s16le" else 1))

    def start(self, **changes) -> dict:
        msg = {**VALID, "call_id": f"f-{self.rng.getrandbits(40):x}", **changes}
        return {k: v for k, v in msg.items() if v is not _DROP}

    def call_case(self) -> tuple[list, str | None]:
        r, kind = self.rng, self.rng.randrange(12)
        if kind == 0:
            return [r.choice(["", "{", "}", "nul", "{'a': 1}", "[" * 100_000, json.dumps(VALID)[:-1],
                              r.randbytes(50).decode("latin-1")])], "bad_json"
        if kind == 1:
            return [json.dumps(r.choice([[], [VALID], 1, "start", None, True, 2.5]))], "bad_message"
        if kind == 2:
            t = r.choice([_DROP, None, "Start", "START", 1, [], "hello", "start "])
            return [json.dumps(self.start(type=t))], "unknown_type"
        if kind == 3:
            bad = r.choice([x for x in ODD if x is not None and not (isinstance(x, str) and CALL_ID.fullmatch(x))]
                           + ["a b", "a/b", "a" * 65, "-x", "é", "id\n", "{t}:x"])
            return [json.dumps(self.start(call_id=bad))], "bad_field"
        if kind == 4:
            bad = r.choice([x for x in ODD if x is not None] + [_DROP, 8001, 7999, 96000, 8000.0, "16000"])
            return [json.dumps(self.start(sample_rate=bad))], "bad_sample_rate"
        if kind == 5:
            bad = r.choice(ODD + [_DROP, "MULAW", "ulaw", "pcm", "opus", "pcm_s16be"])
            return [json.dumps(self.start(encoding=bad))], "bad_encoding"
        if kind == 6:
            bad = r.choice([x for x in ODD if x is not None and not isinstance(x, dict)] + [
                {"k": [1]}, {"k": {"a": 1}}, {"k": None}, {"k": True}, {"k": "v" * 5000},
                {str(i): i for i in range(100)}, {"k" * 100: 1}])
            return [json.dumps(self.start(metadata=bad))], "bad_field"
        if kind == 7:
            return [json.dumps({**self.start(), r.choice(["rate", "token", "__proto__", "Type", ""]): 1})], "bad_field"
        if kind == 8:
            return [self.blob() or b"\x00"], "audio_before_start"
        if kind == 9:
            return [json.dumps({"type": "stop", **r.choice([{}, {"call_id": "x"}])})], "stop_before_start"
        # after a good start: a bad frame of the call's own encoding, a second start, or a bad text frame
        enc = r.choice(["pcm_s16le", "f32le", "mulaw", "alaw"])
        head = [json.dumps(self.start(encoding=enc, sample_rate=r.choice([8000, 16000, 44100])))]
        good = [self.audio(enc) for _ in range(r.randrange(3))]
        if kind == 10:
            if enc in ("pcm_s16le", "f32le"):
                width = 2 if enc == "pcm_s16le" else 4
                bad = r.randbytes(r.randrange(1, 400) * width + r.randrange(1, width))
                return head + good + [bad], "bad_audio"
            return head + good + [json.dumps(self.start())], "already_started"
        if enc == "f32le" and r.random() < 0.5:
            nan = struct.pack("<f", r.choice([float("nan"), float("inf"), float("-inf")])) * r.randrange(1, 50)
            return head + [nan], "bad_audio"
        tail = r.choice([("{", "bad_json"), ("[]", "bad_message"), ('{"type": "pause"}', "unknown_type"),
                         (json.dumps(VALID), "already_started")])
        return head + good + [tail[0]], tail[1]

    def action(self) -> str:
        r = self.rng
        if r.random() < 0.1:
            return r.choice(["", "{", "[]", "null", "x" * r.randrange(100_000), json.dumps([1, 2])])
        msg = {"type": r.choice(["claim", "ack", "reroute", "wrong", "delete", "", None, 1, "x" * 1000]),
               "call_id": r.choice(ODD + ["no-such-call", "triage:queue:15", "*", "../../etc/passwd"]),
               "service": r.choice(ODD + [15, 17, 18, 16, 112, -15, "18"]),
               "dispatcher": r.choice(ODD), "to_service": r.choice(ODD + [15, 17, 18]),
               "keyword": r.choice(ODD + ["incendie", "gaz"]), "time": r.choice(ODD + [1.5, -1, float("nan")])}
        for k in r.sample(list(msg), r.randrange(3)):
            del msg[k]
        return json.dumps(msg)


_DROP = object()


async def run_call_case(base: str, frames: list) -> tuple[str | None, int | None]:
    async with connect(base + "/call", max_size=None) as ws:
        try:
            for f in frames:
                await ws.send(f)
            events = await collect(ws, "error", timeout=10)
        except (ConnectionClosed, TimeoutError):
            events = []
        await ws.wait_closed()
        err = next((e for e in events if e.get("type") == "error"), {})
        return err.get("code"), ws.close_code


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fuzz(model_path, redis_url, seed: int, messages: int, caplog, rounds: int = 1) -> dict:
    """`messages` in `rounds` equal rounds against one server; the process's RSS after each round."""
    fuzzer = Fuzzer(seed)
    counts = {"call_frames": 0, "actions": 0, "wrong": [], "rss_mb": []}

    async def scenario(server, base):
        port = server.config.port
        goods = [asyncio.create_task(fire_call(base, f"good-{i}", pace=0.01)) for i in range(3)]
        feed = await connect(base + "/feed", max_size=None)
        await feed.recv()  # snapshot

        async def calls(target):
            while counts["call_frames"] < target // 2:
                frames, code = fuzzer.call_case()
                counts["call_frames"] += len(frames)
                got = await run_call_case(base, frames)
                if got != (code, CLOSE[code]):
                    counts["wrong"].append((frames[-1][:200], code, got))

        results = 0

        async def actions(target):
            nonlocal results
            while counts["actions"] < target - target // 2:
                batch = [fuzzer.action() for _ in range(50)]
                for a in batch:
                    await feed.send(a)
                counts["actions"] += len(batch)
                while results < counts["actions"]:
                    ev = json.loads(await asyncio.wait_for(feed.recv(), 10))
                    if ev["type"] == "action_result":
                        results += 1
                        if ev["ok"]:
                            counts["wrong"].append(("action accepted", ev))
        for r in range(1, rounds + 1):
            target = messages * r // rounds
            await asyncio.gather(calls(target), calls(target), actions(target))
            gc.collect()
            await asyncio.sleep(0.3)
            counts["rss_mb"].append(round(rss_mb(), 1))
        counts["good"] = await asyncio.gather(*goods)
        await feed.close()
        counts["health"] = (await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/healthz"))[0]
        await asyncio.sleep(0.3)
        counts["left"] = (len(server.sessions), len(server.feeds), len(server.outbox.items))
        return counts

    with caplog.at_level(logging.WARNING):
        result = live(model_path, redis_url, scenario)
    result["logged"] = [r.getMessage()[:300] for r in caplog.records if r.levelno >= logging.ERROR]
    return result


def check(result: dict, seed: int, messages: int) -> None:
    where = f"(seed {seed}: TRIAGE_FUZZ_SEED={seed} reproduces it)"
    assert result["call_frames"] + result["actions"] >= messages, where
    assert not result["wrong"], f"{len(result['wrong'])} wrong answers, first {result['wrong'][:3]} {where}"
    assert result["good"] == [[18], [18], [18]], where
    assert result["health"] == 200 and result["left"] == (0, 0, 0), where
    assert not result["logged"], f"unhandled errors logged: {result['logged'][:3]} {where}"
    rss = result["rss_mb"]
    # Back to its baseline: after the first round has warmed every path, further rounds of bad traffic
    # leave the process no bigger (within allocator noise).
    assert len(rss) < 2 or rss[-1] - rss[0] < 16, f"RSS grew {rss} MB {where}"


def _seed(default: int) -> int:
    return int(os.environ.get("TRIAGE_FUZZ_SEED", default))


def test_fuzz_a_live_server_quick(loud_model_path, redis_server, rdb, caplog):
    seed = _seed(20261123)
    check(fuzz(loud_model_path, redis_server.url, seed, 1_000, caplog), seed, 1_000)


@pytest.mark.fuzz
def test_fuzz_a_live_server_10k(loud_model_path, redis_server, rdb, caplog):
    seed = _seed(random.randrange(1 << 32))
    print(f"fuzz seed {seed}")
    result = fuzz(loud_model_path, redis_server.url, seed, 12_000, caplog, rounds=3)
    print(f"RSS after each round of 4 000 messages: {result['rss_mb']} MB")
    check(result, seed, 12_000)
