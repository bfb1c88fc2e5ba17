"""The chat page of `nextn serve`, driven in headless Chromium (Debian's `chromium`, through Playwright):
a greedy reply equals the API's, accepted drafts are marked and add up to the response's counts, Stop frees
the slot, and the page asks for the API key."""

import shutil
import socket
import threading
import time

import httpx
import openai
import pytest
import uvicorn

from nextn.engine.engine import Engine
from nextn.server.app import create_app

KEY = "page-key"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is installed by .ci/run")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium; .ci/run does)")


@pytest.fixture(scope="module")
def server(demo_model):
    engine = Engine(model=str(demo_model), spec="mtp", n_parallel=2, ctx_size=4096, progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(engine, api_key=KEY), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "engine": engine}
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1100, "height": 800})
        pg.goto(server["url"] + "/")
        yield pg
        pg.screenshot(path=str(tmp_path_factory.mktemp("webui") / "chat.png"), full_page=True)
        browser.close()


def _ask(page, text: str, max_tokens: int) -> None:
    if page.is_visible("#keybox"):          # a test run on its own: the key test has not entered the key
        page.fill("#key", KEY)
        page.click("#key-ok")
        page.wait_for_selector("#keybox", state="hidden")
    page.fill("#max_tokens", str(max_tokens))
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def test_the_page_asks_for_the_key_and_shows_the_model(page, server):
    page.wait_for_selector("#keybox", state="visible")
    assert httpx.get(server["url"] + "/v1/models").status_code == 401          # nothing without the key
    page.fill("#key", KEY)
    page.click("#key-ok")
    page.wait_for_selector("#keybox", state="hidden")
    page.wait_for_function("document.getElementById('model').textContent.includes('bundled')")
    assert "nextn-demo-code" in page.inner_text("#model") and "mtp" in page.inner_text("#model")


def test_a_greedy_reply_equals_the_api_and_its_drafts_are_marked(page, server):
    prompt = "Write a function that reverses a list."
    _ask(page, prompt, 48)
    page.wait_for_selector(".msg.assistant[data-done='1']", timeout=60_000)
    reply = page.locator(".msg.assistant").last
    client = openai.OpenAI(base_url=server["url"] + "/v1", api_key=KEY, max_retries=0)
    api = client.chat.completions.create(model=client.models.list().data[0].id,
                                         messages=[{"role": "user", "content": prompt}], max_tokens=48,
                                         temperature=0, top_p=1, extra_body={"speculative": True, "draft_max": 3})
    assert reply.inner_text() == api.choices[0].message.content
    timings = __import__("json").loads(reply.get_attribute("data-timings"))
    assert int(reply.get_attribute("data-marked-accepted")) == timings["accepted_tokens"] > 0
    assert int(reply.get_attribute("data-marked-tokens")) == timings["generated_tokens"]
    assert reply.locator("span.t.d0, span.t.d1, span.t.d2, span.t.d3").count() > 0
    assert page.inner_text("#s-acc").endswith("%")


def test_stop_cancels_the_request_and_frees_the_slot(page, server):
    engine = server["engine"]
    step = engine.step

    def slow_step():               # a slow model: the reply is still running when Stop is pressed
        time.sleep(0.02)
        return step()

    engine.step = slow_step
    try:
        _ask(page, "Count from one to one thousand.", 2000)
        page.wait_for_selector("#stop", state="visible")
        page.wait_for_function("[...document.querySelectorAll('.msg.assistant')].pop().textContent.length > 5")
        page.click("#stop")
        page.wait_for_selector(".msg.assistant[data-done='1'] >> nth=1", timeout=10_000)
        deadline = time.time() + 10
        while engine.scheduler.active and time.time() < deadline:
            time.sleep(0.05)
        assert not engine.scheduler.active
        assert int(page.locator(".msg.assistant").last.get_attribute("data-marked-tokens")) < 2000
    finally:
        engine.step = step


def test_phone_width_puts_the_settings_below_the_chat(page):
    page.set_viewport_size({"width": 390, "height": 800})
    try:
        log, aside = page.locator("#log").bounding_box(), page.locator("aside").bounding_box()
        assert aside["y"] > log["y"] and aside["width"] <= 390
    finally:
        page.set_viewport_size({"width": 1100, "height": 800})
