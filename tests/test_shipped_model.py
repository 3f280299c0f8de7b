"""The shipped model (models/kws12.onnx + manifest) through the real service and the CLI contract."""

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from livekit import collect, send_audio, start_call

from triage.audio import decode, encode, read_wav, resample
from triage.embedded_redis import EmbeddedRedis
from triage.features import FeatureParams
from triage.keywords import CLASSES, KEYWORDS
from triage.model import DEFAULT_MODEL, KeywordModel
from triage.server import ServerConfig, TriageServer
from triage.store import RouteStore

DEMO = Path(__file__).resolve().parent.parent / "triage" / "demo_calls"


def test_manifest_travels_with_the_model():
    m = KeywordModel(DEFAULT_MODEL)
    manifest = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert m.classes == CLASSES and m.features == FeatureParams()  # what training used is what serving uses
    assert set(manifest["thresholds"]) == set(KEYWORDS)
    assert all(0.3 <= t <= 0.9999 for t in manifest["thresholds"].values())  # the calibration grid
    assert manifest["provenance"]["synthetic"]
    # the operating point comes from voices the model never trained on, with hours of keyword-free speech
    assert manifest["metrics"]["calibration"]["keyword_free_hours"] > 1
    assert manifest["metrics"]["streaming_test"]["keyword_free_speech"]["hours"] > 1


def test_fixture_call_with_electrocution_is_routed_to_18_live(tmp_path):
    wav = read_wav(DEMO / "demo1_electrocution.wav")
    data = encode(resample(wav.samples, wav.sample_rate, 8000), "mulaw")
    frames = [data[i: i + 160] for i in range(0, len(data), 160)]

    async def main():
        with EmbeddedRedis(tmp_path / "r") as r:
            server = TriageServer(KeywordModel(), RouteStore(r.url), ServerConfig(port=0, score_interval_s=0.02))
            await server.start()
            try:
                ws, _ = await start_call(f"ws://127.0.0.1:{server.config.port}/call", "demo-fire")
                await send_audio(ws, frames)
                await ws.send(json.dumps({"type": "stop"}))
                events = await collect(ws, "summary", timeout=60)
                await ws.close()
            finally:
                await server.stop()
                await server.store.close()
            db = redis.Redis.from_url(r.url, decode_responses=True)
            return events, db.xrange("triage:queue:18")

    events, queue = asyncio.run(main())
    dets = [e for e in events if e["type"] == "detection"]
    assert any(d["keyword"] == "électrocution" and d["service"] == 18 for d in dets)
    assert events[-1]["services"] == [18]
    assert [e[1]["call_id"] for e in queue] == ["demo-fire"]


@pytest.mark.parametrize("name, services", [("demo1_electrocution.wav", [18]), ("demo2_intoxication.wav", [15]),
                                            ("demo3_cambriolage.wav", [17]), ("demo4_gaz_brulure.wav", [15, 18])])
def test_replay_contract_on_bundled_calls(name, services):
    r = subprocess.run([sys.executable, "-m", "triage.cli", "replay", str(DEMO / name), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    (line,) = [json.loads(x) for x in r.stdout.splitlines()]
    assert set(line) == {"file", "services", "detections"} and line["services"] == services


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_the_sentence_a_new_user_says_first_is_routed_to_18():
    """What a new user tries after the README's first command, `triage call --say "Allô, il y a un incendie dans
    mon immeuble, venez vite"`: the client's own voice, over its default line (8 kHz μ-law), as the live core
    hears it. (An early model detected nothing in it; issue #9.)"""
    from triage import client
    from triage.replay import replay_samples

    samples, rate = client.synthesize("Allô, il y a un incendie dans mon immeuble, venez vite")
    data, _ = client.prepare(samples, rate, "mulaw", 8000)
    result = replay_samples(KeywordModel(), resample(decode(data, "mulaw"), 8000), "say")
    assert [d.keyword for d in result.detections] == ["incendie"] and result.services == [18]
