"""The demo app (app.py): its search callback and caches, and the page in a real browser.

The browser test serves ``build_demo(...)`` on a free local port and drives it with Playwright through
Debian's chromium (``scripts/install_browser.sh`` installs it; Playwright's own browser download is not used).
Without ``/usr/bin/chromium`` it skips, unless ``CI`` is set: then it fails, so CI cannot skip it silently. A
screenshot of the results page goes to the test's tmp folder and, when set, to ``$GADMS_SCREENSHOT_DIR``.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# headless, and no background connections: the test machine's network is closed (refused connections)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
K = 5
# only words of the tiny tokenizer's vocabulary (tests/conftest.py), so every word is one token
QUERY = "a young woman wearing a red coat and black pants carries a backpack"
CAPTION = re.compile(r"^#(\d+) -?\d+\.\d{3} synthetic/p\d{5}_\d{2}\.jpg$")


def _load_app():
    """app.py (a script at the repository root, not a package) as the module ``app``."""
    if "app" not in sys.modules:
        spec = importlib.util.spec_from_file_location("app", ROOT / "app.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["app"] = module
        spec.loader.exec_module(module)
    return sys.modules["app"]


@pytest.fixture(scope="module")
def app():
    return _load_app()


@pytest.fixture(scope="module")
def model_and_processor(tiny_gadms_dir):
    from evaluation.embedding import load_model_and_processor

    return load_model_and_processor(tiny_gadms_dir)


@pytest.fixture(scope="module")
def gallery_index(tmp_path_factory, tiny_gadms_dir, model_and_processor):
    """12 synthetic persons' images (6 persons x 2, 64x32) indexed with the tiny random model."""
    from dataset_builders.synthetic import SyntheticPersonConfig, write_cuhk_pedes
    from retrieval.index import GalleryIndex

    config = SyntheticPersonConfig(num_identities=6, images_per_identity=2, image_size=(64, 32), seed=1)
    folder = write_cuhk_pedes(config, tmp_path_factory.mktemp("app_gallery") / "synthetic")
    model, processor = model_and_processor
    index, skipped = GalleryIndex.build(model, processor, folder / "imgs", model_id=str(tiny_gadms_dir),
                                        progress=False)
    assert len(index) == 12 and not skipped
    return index


# ---------------------------------------------------------------------------------------------- callback


def test_run_query_returns_k_ranked_items_with_captions(app, gallery_index, model_and_processor):
    model, processor = model_and_processor
    items, token_html = app.run_query(gallery_index, model, processor, QUERY, K)
    assert len(items) == K
    ranks = []
    for path, caption in items:
        assert Path(path).is_file()
        match = CAPTION.match(caption)
        assert match, caption
        ranks.append(int(match.group(1)))
    assert ranks == list(range(1, K + 1))
    scores = [float(caption.split()[1]) for _, caption in items]
    assert scores == sorted(scores, reverse=True)
    for word in ("woman", "coat", "backpack"):
        assert word in token_html


def test_run_query_clamps_k_to_the_gallery(app, gallery_index, model_and_processor):
    items, _ = app.run_query(gallery_index, *model_and_processor, QUERY, 100)
    assert len(items) == len(gallery_index)


@pytest.mark.parametrize("query", ["", "   ", None])
def test_empty_query_gives_a_message_not_an_error(app, gallery_index, model_and_processor, query):
    items, token_html = app.run_query(gallery_index, *model_and_processor, query, K)
    assert items == []
    assert "Type a description of a person" in token_html


def test_build_demo_makes_blocks(app, gallery_index, model_and_processor):
    import gradio as gr

    assert isinstance(app.build_demo(gallery_index, *model_and_processor, k=3), gr.Blocks)


def test_default_model_env_demo_output_or_clear_error(app, monkeypatch, tmp_path):
    monkeypatch.setenv("GADMS_MODEL", "org/some-model")
    assert app.default_model() == "org/some-model"
    monkeypatch.delenv("GADMS_MODEL")
    saved = tmp_path / "run" / "best"
    saved.mkdir(parents=True)
    (saved / "config.json").write_text("{}")
    monkeypatch.setattr(app, "DEMO_MODELS", (saved, tmp_path / "run" / "last"))
    assert app.default_model() == str(saved)
    monkeypatch.setattr(app, "DEMO_MODELS", (tmp_path / "missing",))
    with pytest.raises(SystemExit, match="make demo"):
        app.default_model()


def test_choose_model_order(app, monkeypatch, tmp_path, gallery_index):
    monkeypatch.delenv("GADMS_MODEL", raising=False)
    assert app.choose_model("org/model", gallery_index) == "org/model"
    assert app.choose_model(str(tmp_path), None) == str(tmp_path.resolve())
    assert app.choose_model(None, gallery_index) == gallery_index.model  # the index's own model
    monkeypatch.setenv("GADMS_MODEL", "org/env-model")
    assert app.choose_model(None, gallery_index) == "org/env-model"


def test_command_line_defaults(app):
    args = app.parse_args([])
    assert (args.host, args.port, args.index, args.model, args.k) == ("127.0.0.1", None, None, None, 10)
    args = app.parse_args(["--model", "m", "--index", "i", "-k", "3", "--port", "7999", "--host", "0.0.0.0"])
    assert (args.host, args.port, args.index, args.model, args.k) == ("0.0.0.0", 7999, "i", "m", 3)


def test_synthetic_index_is_built_once_then_loaded(app, tmp_path, tiny_gadms_dir, model_and_processor,
                                                   monkeypatch):
    model, processor = model_and_processor
    index = app.synthetic_index(model, processor, str(tiny_gadms_dir), tmp_path, identities=2)
    assert len(index) == 2 * app.GALLERY_IMAGES_PER_IDENTITY

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached index should have been loaded")

    monkeypatch.setattr(app.GalleryIndex, "build", no_rebuild)
    again = app.synthetic_index(model, processor, str(tiny_gadms_dir), tmp_path, identities=2)
    assert list(again.paths) == list(index.paths)


# ----------------------------------------------------------------------------------------------- browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium through Playwright; skipped when it is not installed (a failure under CI)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: run scripts/install_browser.sh (as root) for the browser test"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set: the browser test must not be skipped)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def served_app(app, gallery_index, model_and_processor):
    """The app served on a free local port; its base URL."""
    demo = app.build_demo(gallery_index, *model_and_processor, k=K)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, share=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.mark.browser
@pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")  # gradio's own pandas calls
def test_search_page_shows_results_and_token_scores(served_app, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside = []  # requests that leave the local server: the app must not phone home or use a CDN
    page.on("request", lambda request: outside.append(request.url)
            if not request.url.startswith((served_app, "data:", "blob:")) else None)
    try:
        page.goto(served_app, wait_until="domcontentloaded")
        box = page.locator("#gadms-query textarea, #gadms-query input").first
        box.fill(QUERY)
        box.press("Enter")

        images = page.locator("#gadms-results img")
        page.wait_for_function(
            """k => {
                const images = [...document.querySelectorAll('#gadms-results img')];
                return images.length === k && images.every(i => i.src && i.complete && i.naturalWidth > 0);
            }""", arg=K, timeout=20_000)
        assert images.count() == K
        assert all(images.nth(i).get_attribute("src") for i in range(K))

        tokens = page.locator("#gadms-token-scores")
        page.wait_for_function(
            "() => (document.querySelector('#gadms-token-scores')?.innerText || '').includes('backpack')",
            timeout=20_000)
        text = tokens.inner_text().lower()
        for word in set(QUERY.split()):
            assert word in text, (word, text)
        first_caption = page.locator("#gadms-results").get_by_text(re.compile(r"^#1 ")).first
        assert CAPTION.match(first_caption.inner_text().strip())

        shot = tmp_path / "app_search.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 0
        if os.environ.get("GADMS_SCREENSHOT_DIR"):
            target = Path(os.environ["GADMS_SCREENSHOT_DIR"])
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, target / shot.name)
        assert outside == []
    finally:
        page.close()


def test_run_query_of_a_model_that_is_not_gadms_still_shows_its_results(app, gallery_index, model_and_processor,
                                                                       monkeypatch):
    """Any model searches; only the token-score panel needs GA-DMS: it says so instead of failing the query."""
    from retrieval.explain import NotGADMSModelError

    def refuse(*args, **kwargs):
        raise NotGADMSModelError("not GA-DMS")

    expected, _ = app.run_query(gallery_index, *model_and_processor, QUERY, K)
    monkeypatch.setattr(app, "explain", refuse)
    items, token_html = app.run_query(gallery_index, *model_and_processor, QUERY, K)
    assert items == expected and "need a GA-DMS model" in token_html
