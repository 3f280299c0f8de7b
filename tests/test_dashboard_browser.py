"""The dashboard in a real headless Chromium against a real server, Redis and call."""

import asyncio
import json
import shutil
import threading
import time

import numpy as np
import pytest
import redis
from livekit import collect, dispatcher_actions, fire_call, mulaw_frames, send_audio, start_call
from onnx_models import silence, tone

from triage.credentials import CredentialFile, Credentials
from triage.embedded_redis import EmbeddedRedis
from triage.model import KeywordModel
from triage.server import ServerConfig, TriageServer
from triage.store import RouteStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed "
                                                          "(scripts/install-system.sh test installs it)")


class ServerThread:
    def __init__(self, model_path, redis_url, **config):
        self.loop = asyncio.new_event_loop()
        self.server = TriageServer(KeywordModel(model_path), RouteStore(redis_url),
                                   ServerConfig(port=0, score_interval_s=0.02, **config))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(20)
        return self

    def run(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __exit__(self, *exc):
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _launch(p, *extra: str):
    """Headless Debian Chromium, quiet: no background traffic, no first-run work."""
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", *extra])


def test_dispatcher_claims_and_acknowledges_a_fire_call(loud_model_path, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    started = time.monotonic()
    with EmbeddedRedis(tmp_path / "redis") as r, ServerThread(loud_model_path, r.url) as st:
        port = st.server.config.port
        with sync_playwright() as p:
            browser = _launch(p)
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/")
            expect(page.locator("#status")).to_have_text("connecté")
            page.fill("#dispatcher", "alice")
            page.locator("#dispatcher").dispatch_event("change")

            async def call():
                ws, _ = await start_call(f"ws://127.0.0.1:{port}/call", "browser-1")
                audio = np.concatenate([silence(1.0, 8000), tone(0.9, rate=8000), silence(1.0, 8000)])
                await send_audio(ws, mulaw_frames(audio), pace=0.002)
                await ws.send(json.dumps({"type": "stop"}))
                await collect(ws, "summary")
                await ws.close()
            st.run(call())

            card = page.locator('[data-cards="18"] .card[data-call="browser-1"]')
            expect(card).to_be_visible(timeout=10_000)
            expect(card.locator(".heard")).to_contain_text("incendie")
            expect(page.locator('[data-count="18"]')).to_have_text("1")
            card.locator(".claim").click()
            expect(card.locator(".state")).to_have_text("pris par alice")
            page.screenshot(path=str(tmp_path / "dashboard.png"))
            card.locator(".ack").click()
            expect(card).to_have_count(0)
            browser.close()
        db = redis.Redis.from_url(r.url, decode_responses=True)
        assert db.hget("triage:call:browser-1", "state:18") == "acked"
        assert db.hget("triage:call:browser-1", "acked_by:18") == "alice"
        assert [a["action"] for a in dispatcher_actions(db)] == ["claim", "ack"]
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    print(f"browser test took {time.monotonic() - started:.1f} s")


def test_second_dispatcher_sees_a_clear_refusal(loud_model_path, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with EmbeddedRedis(tmp_path / "redis") as r, ServerThread(loud_model_path, r.url) as st:
        port = st.server.config.port

        async def routed_and_claimed_by_bob():
            ws, _ = await start_call(f"ws://127.0.0.1:{port}/call", "two-1")
            await send_audio(ws, mulaw_frames(np.concatenate([tone(0.9, rate=8000), silence(1.0, 8000)])))
            await ws.send(json.dumps({"type": "stop"}))
            await collect(ws, "summary")
            await st.server.store.claim("two-1", 18, "bob")
        st.run(routed_and_claimed_by_bob())
        with sync_playwright() as p:
            browser = _launch(p)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.fill("#dispatcher", "alice")
            card = page.locator('[data-cards="18"] .card[data-call="two-1"]')
            expect(card.locator(".state")).to_have_text("pris par bob")
            card.locator(".ack").click()
            expect(page.locator("#notice")).to_contain_text("claimed by bob")
            browser.close()
        db = redis.Redis.from_url(r.url, decode_responses=True)
        assert db.hget("triage:call:two-1", "state:18") == "claimed"


HOSTILE = '<img src=x onerror="window.pwned=1">'


def test_dispatcher_signs_in_once_and_acts_under_the_credential_name(loud_model_path, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    users = CredentialFile(tmp_path / "users.json")
    creds = Credentials()
    alice = creds.add("alice", "dispatcher", time.time())
    users.save(creds.users)
    with EmbeddedRedis(tmp_path / "redis") as r, \
            ServerThread(loud_model_path, r.url, token="ingest-secret", users_file=users.path) as st:
        port = st.server.config.port
        with sync_playwright() as p:
            browser = _launch(p)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            expect(page.locator("#login")).to_be_visible()
            page.fill("#credential", "ingest-secret")  # a gateway's credential does not open the feed
            page.locator("#login button").click()
            expect(page.locator("#login-error")).to_contain_text("cannot be used for dispatcher")
            page.fill("#credential", alice)
            page.locator("#login button").click()
            expect(page.locator("#status")).to_have_text("connecté")
            expect(page.locator("#dispatcher")).to_have_value("alice")
            expect(page.locator("#login")).to_be_hidden()
            page.reload()  # kept for the session: no second sign-in
            expect(page.locator("#status")).to_have_text("connecté")
            expect(page.locator("#login")).to_be_hidden()

            async def fire_call():
                ws, _ = await start_call(f"ws://127.0.0.1:{port}/call?token=ingest-secret", "signed-1",
                                         metadata={"caller": HOSTILE, "line": "<script>window.pwned=2</script>"})
                await send_audio(ws, mulaw_frames(np.concatenate([tone(0.9, rate=8000), silence(1.0, 8000)])))
                await ws.send(json.dumps({"type": "stop"}))
                await collect(ws, "summary")
                await ws.close()
            st.run(fire_call())
            card = page.locator('[data-cards="18"] .card[data-call="signed-1"]')
            # Caller metadata comes from the line: shown as text, never run as HTML.
            expect(card.locator(".caller")).to_have_text(HOSTILE)
            expect(card.locator(".meta")).to_contain_text("<script>")
            assert page.evaluate("window.pwned") is None and card.locator("img").count() == 0
            # The name field is read-only; a forged name in the page changes nothing on the server.
            page.evaluate("document.querySelector('#dispatcher').value = 'mallory'")
            card.locator(".claim").click()
            expect(card.locator(".state")).to_have_text("pris par alice")
            browser.close()
        db = redis.Redis.from_url(r.url, decode_responses=True)
        assert db.hget("triage:call:signed-1", "claimed_by:18") == "alice"
        assert [a["dispatcher"] for a in dispatcher_actions(db)] == ["alice"]


def test_dashboard_over_tls_with_a_self_signed_certificate(loud_model_path, tmp_path, self_signed):
    from playwright.sync_api import expect, sync_playwright

    cert, key = self_signed
    with EmbeddedRedis(tmp_path / "redis") as r, \
            ServerThread(loud_model_path, r.url, certfile=cert, keyfile=key) as st:
        port = st.server.config.port
        with sync_playwright() as p:
            browser = _launch(p)
            page = browser.new_page(ignore_https_errors=True)  # the certificate is self-signed
            page.goto(f"https://127.0.0.1:{port}/")
            expect(page.locator("#status")).to_have_text("connecté")  # the feed over wss://
            browser.close()


def test_dispatcher_hears_the_evidence_confirms_and_reports_a_missed_keyword(loud_model_path, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with EmbeddedRedis(tmp_path / "redis") as r, ServerThread(loud_model_path, r.url,
                                                               record_dir=tmp_path / "rec") as st:
        port = st.server.config.port
        with sync_playwright() as p:
            browser = _launch(p, "--autoplay-policy=no-user-gesture-required")
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            expect(page.locator("#status")).to_have_text("connecté")
            expect(page.locator(".advice")).to_contain_text("suggestions")
            page.fill("#dispatcher", "bob")
            page.locator("#dispatcher").dispatch_event("change")

            assert st.run(fire_call(f"ws://127.0.0.1:{port}", "heard-1", pace=0.002)) == [18]

            card = page.locator('[data-cards="18"] .card[data-call="heard-1"]')
            expect(card.locator(".rec-flag")).to_be_visible(timeout=10_000)
            with page.expect_response(lambda resp: "/recordings/heard-1/clip" in resp.url) as got:
                card.locator(".heard .listen").first.click()
            clip = got.value
            assert clip.status == 200 and clip.headers["content-type"] == "audio/wav"
            assert int(clip.headers["content-length"]) > 8000  # 2.4 s of PCM16 at 8 kHz
            card.locator(".confirm").click()
            expect(card.locator(".confirm")).to_have_text("Confirmé (bob)")
            card.locator(".missed-keyword").select_option("gaz")
            card.locator(".missed-time").fill("0:02,5")
            card.locator(".missed button").click()
            expect(page.locator("#notice")).to_have_text("Action enregistrée.")
            page.screenshot(path=str(tmp_path / "feedback.png"))
            browser.close()
        db = redis.Redis.from_url(r.url, decode_responses=True)
        fb = [f for _, f in db.xrange("triage:feedback")]
        assert [(f["action"], f["dispatcher"], f.get("keyword"), f.get("said_at")) for f in fb] == [
            ("confirm", "bob", None, None), ("missed", "bob", "gaz", "2.5")]
