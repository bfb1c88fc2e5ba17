"""Screenshot of `nextn serve`'s chat page after one greedy reply (docs/webui.png in the README).

    python scripts/webui_screenshot.py [--out docs/webui.png] [--prompt "..."]

Serves the bundled demo model on a free loopback port and drives Debian's chromium through Playwright.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import threading
import time

import uvicorn
from playwright.sync_api import sync_playwright

from nextn.engine.engine import Engine
from nextn.server.app import create_app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/webui.png")
    ap.add_argument("--prompt", default="Write a function that merges two sorted lists.")
    ap.add_argument("-n", "--max-tokens", type=int, default=160)
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(Engine(progress=False)), host="127.0.0.1", port=port,
                                        log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 640})
        page.goto(f"http://127.0.0.1:{port}/")
        page.fill("#max_tokens", str(args.max_tokens))
        page.fill("#prompt", args.prompt)
        page.press("#prompt", "Enter")
        page.wait_for_selector(".msg.assistant[data-done='1']", timeout=60_000)
        page.screenshot(path=args.out)
        browser.close()
    srv.should_exit = True
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
