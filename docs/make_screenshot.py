"""Screenshot of the dashboard during `triage demo` → docs/dashboard.png (headless Debian Chromium).

    .venv/bin/python docs/make_screenshot.py [--wait 25]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wait", type=float, default=25.0, help="seconds of demo before the screenshot")
    ap.add_argument("--port", type=int, default=8799)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    data = tempfile.mkdtemp()
    demo = subprocess.Popen([sys.executable, "-m", "triage.cli", "demo", "--port", str(args.port), "--data-dir", data],
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{args.port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 820})
            page.goto(f"http://127.0.0.1:{args.port}/")
            page.fill("#dispatcher", "Camille")
            page.locator("#dispatcher").dispatch_event("change")
            time.sleep(args.wait)
            first = page.locator(".card .claim").first
            if first.count():
                first.click()
                time.sleep(1)
            out = ROOT / "docs" / "dashboard.png"
            page.screenshot(path=str(out))
            browser.close()
        print(out)
    finally:
        demo.terminate()
        demo.wait(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
