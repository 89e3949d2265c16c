"""The web page in a real browser: headless Chromium (Debian's package, installed by ``.ci/run``)
driven by Playwright, against the service over real HTTP on 127.0.0.1.

The service runs in a thread (werkzeug) over the demo catalog and its events, with the tiny test
CLIP model so search by picture works. Playwright never downloads a browser here: it launches
``/usr/bin/chromium`` (``RECSYS_TEST_CHROMIUM`` overrides). Where Chromium or Playwright is
missing the tests are skipped with the reason, except under ``CI=true`` where that is a failure.

Full-page screenshots go to ``tests/output/screenshots/`` (ignored by git) for a person to look at.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import threading
from pathlib import Path

import pytest
import requests

from indexer.pipeline import Pipeline
from service.web.app import create_app
from service.store.db import make_engine, make_session_factory, upgrade
from service.demo import EVENTS_FILE, IMAGES_DIR, ITEMS_FILE
from service.store.importing import import_events, import_items
from service.settings import load_settings
from tests.fixtures_clip import write_tiny_clip_checkpoint, write_tiny_clip_config

# Loads the real text model, builds indexes or runs servers: `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

IN_CI = os.environ.get("CI", "").lower() == "true"  # as in conftest.py
CHROMIUM = os.environ.get("RECSYS_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "output" / "screenshots"
VIEWPORT = {"width": 1440, "height": 960}
TIMEOUT_MS = 20_000


def require_browser() -> None:
    """Skip (locally) or fail (CI=true) when Chromium or Playwright is unavailable."""
    reason = None
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)) and not shutil.which(CHROMIUM):
        reason = f"Chromium not found at {CHROMIUM} (apt-get install chromium chromium-driver)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError as exc:
            reason = f"Playwright is not installed: {exc}"
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: browser tests must run)")
    pytest.skip(reason)


# --- the service -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The demo catalog and events, an index with the text and (tiny) CLIP spaces, served over HTTP."""
    require_browser()
    from werkzeug.serving import make_server

    root = tmp_path_factory.mktemp("browser")
    cfg = write_tiny_clip_config(root)
    ckpt = write_tiny_clip_checkpoint(root, cfg)
    overrides = {"data_dir": str(root / "data"), "clip_model": str(cfg), "clip_pretrained": str(ckpt),
                 "index_poll_seconds": 1}
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("RECSYS_") and k != "RECSYS_TEST_CHROMIUM"]:
            mp.delenv(key)
        settings = load_settings(overrides, environ={})
        engine = make_engine(settings)
        upgrade(engine)
        factory = make_session_factory(engine)
        import_items(ITEMS_FILE, session_factory=factory, settings=settings, progress=False)
        import_events(EVENTS_FILE, session_factory=factory, event_types=settings.event_types, progress=False)
        version = Pipeline(settings, factory).run().version
        app = create_app(overrides)
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, name="browser-test-server", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_port}"
    try:
        status = requests.get(f"{base}/status", timeout=30).json()
        assert status["index_version"] == version and "clip" in status["spaces"], status
        yield {"base": base, "version": version, "status": status}
    finally:
        httpd.shutdown()
        thread.join(timeout=10)
        engine.dispose()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, server):
    """A fresh browser context (own localStorage) on the search page, fully started."""
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1, base_url=server["base"])
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto("/")
    pg.wait_for_selector("body[data-ready=true]")
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(pg, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    pg.evaluate("() => { const t = document.getElementById('toast'); if (t) t.hidden = true; }")
    pg.screenshot(path=str(path), full_page=True)
    return path


def card_attr(pg, attr: str) -> list[str]:
    return pg.eval_on_selector_all("#results .card[data-id]", f"cs => cs.map(c => c.dataset.{attr})")


def search(pg, query: str) -> None:
    pg.fill("#q", "")
    pg.type("#q", query, delay=15)
    pg.press("#q", "Enter")
    pg.wait_for_function("q => document.querySelector('#result-meta').textContent.includes(q)", arg=query)
    pg.wait_for_selector("#results .card[data-id]")


def wait_for_results_where(pg, condition_js: str) -> None:
    """Until the grid is loaded (not dimmed), non-empty, and every card meets ``condition_js`` (c => bool)."""
    pg.wait_for_function(
        f"""() => {{
            const grid = document.querySelector('#results');
            const cards = [...grid.querySelectorAll('.card[data-id]')];
            return !grid.classList.contains('loading') && cards.length > 0 && cards.every({condition_js});
        }}"""
    )


# --- tests ---------------------------------------------------------------------------------------


def test_pages_are_served_and_stay_out_of_the_openapi_doc(server):
    base = server["base"]
    page = requests.get(f"{base}/", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"] and 'id="q"' in page.text
    assert requests.get(f"{base}/ui/status", timeout=10).status_code == 200
    for asset in ("app.js", "status.js", "style.css"):
        assert requests.get(f"{base}/static/{asset}", timeout=10).status_code == 200
    # Offline: nothing is loaded from another host.
    for text in (page.text, requests.get(f"{base}/static/style.css", timeout=10).text):
        assert not re.search(r"(src|href)=\"https?://|@import|url\(https?:", text)
    paths = requests.get(f"{base}/openapi.json", timeout=10).json()["paths"]
    assert "/" not in paths and not any(p.startswith("/ui") for p in paths)
    facets = requests.get(f"{base}/ui/facets", timeout=10).json()
    assert facets["kinds"] == ["product", "article", "image"]
    assert "running-shoes" in facets["categories"] and facets["counts"]["kinds"]["product"] == 180
    assert set(facets["by_kind"]["article"]) <= set(facets["categories"])


def test_typing_a_query_shows_results(page):
    search(page, "waterproof jacket for hiking")
    titles = card_attr(page, "title")
    assert len(titles) == 24 and any("jacket" in t.lower() for t in titles[:3]), titles[:5]
    first = page.locator("#results .card").first
    assert first.locator(".badge").count() >= 1  # which signal found it
    assert first.locator(".score").inner_text()
    assert "results" in page.inner_text("#result-meta")
    assert page.locator("#more").is_visible()  # next page available
    page.click("#more")
    page.wait_for_function("() => document.querySelectorAll('#results .card[data-id]').length > 24")
    assert "q=waterproof" in page.url


def test_pick_a_suggestion_with_the_keyboard_and_the_mouse(page):
    page.click("#q")
    page.keyboard.type("swi", delay=40)
    page.wait_for_selector("#suggestions .suggestion")
    options = page.locator("#suggestions .suggestion")
    assert options.count() >= 2
    assert all(re.search(r"\bswi", t, re.I) for t in options.locator(".s-title").all_inner_texts())
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowUp")
    active = page.locator("#suggestions .suggestion.active")
    assert active.count() == 1 and active.get_attribute("data-index") == "0"
    picked_id = active.get_attribute("data-id")
    picked_title = active.locator(".s-title").inner_text()
    page.keyboard.press("Enter")
    assert page.locator("#suggestions").is_hidden()
    assert page.input_value("#q") == picked_title
    page.wait_for_function("t => document.querySelector('#result-meta').textContent.includes(t)", arg=picked_title)
    assert picked_id in card_attr(page, "id")[:3]

    # Escape closes the list without searching; then pick with the mouse.
    page.fill("#q", "")
    page.keyboard.type("espr", delay=40)
    page.wait_for_selector("#suggestions .suggestion")
    page.keyboard.press("Escape")
    assert page.locator("#suggestions").is_hidden() and page.input_value("#q") == "espr"
    page.keyboard.type("e", delay=40)
    second = page.locator("#suggestions .suggestion").nth(1)
    second.wait_for()
    title = second.locator(".s-title").inner_text()
    second.click()
    assert page.input_value("#q") == title
    page.wait_for_function("t => document.querySelector('#result-meta').textContent.includes(t)", arg=title)


def test_kind_and_category_filters_show_only_matching_results(page):
    search(page, "running shoes")
    assert {"product", "article"} <= set(card_attr(page, "kind"))
    page.click("#kind-filter button[data-kind=article]")
    wait_for_results_where(page, "c => c.dataset.kind === 'article'")
    assert "kind=article" in page.url
    categories = page.eval_on_selector_all("#category option", "os => os.map(o => o.value).filter(Boolean)")
    assert "care-tips" in categories and "running-shoes" not in categories  # only the kind's categories
    page.select_option("#category", "care-tips")
    wait_for_results_where(page, "c => c.dataset.kind === 'article' && c.dataset.category === 'care-tips'")
    assert "category=care-tips" in page.url
    page.click("#kind-filter button[data-kind='']")
    page.select_option("#category", "running-shoes")
    wait_for_results_where(page, "c => c.dataset.category === 'running-shoes'")
    assert {"product", "image"} <= set(card_attr(page, "kind"))


def test_more_like_this_and_the_item_panel(page, server):
    search(page, "chef knife")
    first = page.locator("#results .card").first
    source_id = first.get_attribute("data-id")
    first.locator(".more-like").click()
    page.wait_for_function("() => document.querySelector('#result-meta').textContent.includes('like')")
    wait_for_results_where(page, f"c => c.dataset.id !== {json.dumps(source_id)}")
    assert "More like" in page.inner_text("#query-chip") and f"like={source_id}" in page.url
    assert "knife" in " ".join(card_attr(page, "title")[:3]).lower()
    # Clicking a card opens the detail panel in place (GET /items/<id>), without navigating away.
    url = page.url
    card = page.locator("#results .card").first
    title = card.get_attribute("data-title")
    card.click()
    page.wait_for_selector("#panel:not([hidden]) table.attrs")
    assert page.inner_text("#panel-title") == title and page.url == url
    page.keyboard.press("Escape")
    assert page.locator("#panel").is_hidden()


def test_clicking_a_result_changes_the_recommendation_row(page):
    """Needs ``GET /users/<id>/recommendations`` (the recommendations API)."""
    guest = page.eval_on_selector("#user", "s => [...s.options].map(o => o.value).find(v => v.startsWith('guest-'))")
    assert guest, "the user picker offers a new visitor"
    page.select_option("#user", guest)
    page.wait_for_function("() => !document.querySelector('#recs-row').classList.contains('loading')")
    before = page.get_attribute("#recs-row", "data-signature")

    search(page, "espresso machine")
    card = page.locator("#results .card").first
    item_id = card.get_attribute("data-id")
    with page.expect_request(lambda r: r.url.endswith("/events") and r.method == "POST") as sent:
        card.click()
    event = json.loads(sent.value.post_data)
    # A click on a search result carries the query that found it (query -> item pairs).
    assert event == {"user_id": guest, "item_id": item_id, "type": "click", "query": "espresso machine"}
    page.wait_for_function("b => document.querySelector('#recs-row').dataset.signature !== b", arg=before)
    page.wait_for_selector("#recs-row .rec-card[data-id]")
    assert page.get_attribute("#recs-row", "data-strategy") == "personalized"
    reasons = page.locator("#recs-row .rec-card .reason").all_inner_texts()
    assert reasons and all(r.strip() and "object" not in r for r in reasons), reasons
    assert page.inner_text("#event-note").startswith("Click recorded")
    page.keyboard.press("Escape")

    # A click in the row carries the recommendation's id, and the row refreshes after it.
    rec_id = page.get_attribute("#recs-row", "data-recommendation-id")
    assert rec_id
    with page.expect_request(lambda r: r.url.endswith("/events") and r.method == "POST") as sent:
        page.locator("#recs-row .rec-card").first.click()
    event = json.loads(sent.value.post_data)
    assert event["recommendation_id"] == rec_id and event["user_id"] == guest and "query" not in event
    page.wait_for_function("r => document.querySelector('#recs-row').dataset.recommendationId !== r", arg=rec_id)
    page.keyboard.press("Escape")
    screenshot(page, "recommendations.png")


def test_search_by_uploaded_and_dropped_image(page, server):
    page.set_input_files("#image-input", str(IMAGES_DIR / "p-0002.png"))
    page.wait_for_function("() => document.querySelector('#result-meta').textContent.includes('by picture')")
    assert card_attr(page, "id")[0] == "p-0002"
    assert page.locator("#query-chip").is_visible() and "p-0002.png" in page.inner_text("#query-chip")

    data = base64.b64encode((IMAGES_DIR / "p-0004.png").read_bytes()).decode()
    page.evaluate(
        """b64 => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
            for (const type of ['dragenter', 'dragover', 'drop']) {
                document.body.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
            }
        }""",
        data,
    )
    page.wait_for_function("() => document.querySelector('#query-chip').textContent.includes('dropped.png')")
    page.wait_for_function("() => document.querySelector('#results .card[data-id]')?.dataset.id === 'p-0004'")
    assert page.locator("#drop-overlay").is_hidden()


def test_api_errors_are_shown_on_the_page(page):
    page.set_input_files("#image-input", files=[{"name": "fake.png", "mimeType": "image/png", "buffer": b"not a picture"}])
    page.wait_for_selector("#notice:not([hidden])")
    assert "not a supported image type" in page.inner_text("#notice-text")


def test_status_page(browser, server):
    base = server["base"]
    for q in ("trail shoes", "coffee", "desk lamp"):
        assert requests.get(f"{base}/search", params={"q": q}, timeout=10).status_code == 200
    status = requests.get(f"{base}/status", timeout=10).json()
    route = status["latency"]["routes"]["GET /search"]
    assert route["count"] >= 3 and 0 < route["p50_ms"] <= route["p95_ms"] <= route["p99_ms"] <= route["max_ms"]
    assert status["latency"]["scope"] == "this worker" and status["latency"]["window"] == 1000

    context = browser.new_context(viewport=VIEWPORT, base_url=base)
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    for path in ("/ui/status", "/status/page"):
        pg.goto(path)
        pg.wait_for_selector("body[data-loaded=true]")
        assert pg.inner_text("#version") == server["version"]
        text_row = pg.locator("#spaces tr[data-space=text]")
        assert "301" in text_row.inner_text() and "1.000" in text_row.inner_text()
        assert pg.locator("#spaces tr[data-space=clip]").count() == 1
        assert pg.locator('#latency tr[data-route="GET /search"]').count() == 1
        assert "this worker" in pg.inner_text("#latency-scope")
        assert pg.inner_text("#build-seconds") != "–"
        # The demo's rebuild trained a model: its recipe and test metrics are on the page.
        model = status["model"]
        assert model["status"] == "trained" and model["family"] in pg.inner_text("#model-summary")
        assert f"cold place from content rank {model['cold_place']['rank']}" in pg.inner_text("#model-summary")
        served = pg.locator("#model-metrics tr[data-setting=model]")
        assert f"{model['metrics']['model']['ndcg']:.4f}" in served.inner_text()
        assert pg.locator("#model-metrics tr[data-setting=without_model]").count() == 1
        # Which encoder turns queries into vectors here, and how its export was checked.
        assert pg.locator("#query-encoder b[data-serving=onnx]").count() == 1
        assert "min cosine 1.000000" in pg.inner_text("#query-encoder")
        # The clip space is served, so its encoder panel shows: the pretrained weights, not fine-tuned.
        assert pg.locator("#clip-encoder").is_visible()
        assert "Pretrained recsys-tiny-clip" in pg.inner_text("#clip-encoder-summary")
    # Auto-refresh: the page asks again within about 5 s.
    with pg.expect_response(lambda r: r.url.endswith("/status"), timeout=8000):
        pass
    screenshot(pg, "status.png")
    context.close()


def test_screenshot_of_the_search_page(page, browser, server):
    """Full-page pictures of the search page in use, for a person to look at."""
    screenshot(page, "home.png")  # before any search: examples and the recommendation row
    demo_user = page.eval_on_selector("#user", "s => [...s.options].map(o => o.value).find(v => v.startsWith('u-'))")
    page.select_option("#user", demo_user)
    page.wait_for_function("() => !document.querySelector('#recs-row').classList.contains('loading')")
    search(page, "trail running shoes")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img')].every(i => i.complete)")
    path = screenshot(page, "search.png")
    assert path.stat().st_size > 20_000
    page.locator("#results .card").nth(1).click()
    page.wait_for_selector("#panel:not([hidden]) table.attrs")
    page.wait_for_timeout(300)
    page.screenshot(path=str(SCREENSHOTS / "item-panel.png"))
    page.keyboard.press("Escape")
    page.click("#q")
    page.fill("#q", "")
    page.keyboard.type("wat", delay=40)
    page.wait_for_selector("#suggestions .suggestion")
    page.keyboard.press("ArrowDown")
    page.screenshot(path=str(SCREENSHOTS / "typeahead.png"))
    page.keyboard.press("Escape")

    # A phone-sized window: the header wraps, the grid narrows.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, base_url=server["base"])
    pg = phone.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto("/?q=rain+jacket")
    pg.wait_for_selector("body[data-ready=true]")
    pg.wait_for_selector("#results .card[data-id]")
    screenshot(pg, "phone.png")
    phone.close()
