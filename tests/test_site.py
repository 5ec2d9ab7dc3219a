"""The site (``make site``, :mod:`egmlib.workflow.site`) built from the committed README and
notebooks, then opened page by page in a real headless Chromium: every page loads without a
console error or a failed request, every image has loaded (natural width above zero), and every
internal link points at a page of the site (and at an anchor that exists on it).

Chromium comes from the system packages (``.ci/run`` installs it); where it is missing the browser
test is skipped locally and fails under CI."""

from __future__ import annotations

import functools
import html.parser
import http.server
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from egmlib.workflow import site as site_mod

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _Ids(html.parser.HTMLParser):
    """Every ``id`` attribute of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids.update(v for k, v in attrs if k == "id" and v)


@functools.cache
def _ids(page: Path) -> frozenset[str]:
    parser = _Ids()
    parser.feed(page.read_text(encoding="utf-8"))
    return frozenset(parser.ids)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return site_mod.build_site(ROOT, tmp_path_factory.mktemp("site") / "html")


@pytest.fixture(scope="module")
def server(built: Path):
    handler = functools.partial(_QuietHandler, directory=str(built))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    thread.join()


def test_site_has_a_page_per_notebook_and_the_api(built: Path):
    nbs = site_mod.notebooks(ROOT)
    assert [p.stem for p in nbs][:6] == ["01_data", "02_vae_s", "03_vae_c", "04_fidelity",
                                         "05_augment", "06_sweep"]
    index = (built / "index.html").read_text(encoding="utf-8")
    assert "Synthetic atrial electrograms for ECGI" in index
    for nb in nbs:
        page = built / "notebooks" / f"{nb.stem}.html"
        assert page.is_file(), page
        assert f'href="notebooks/{nb.stem}.html"' in index, f"{nb.stem} not in the navigation"
    api = (built / "api.html").read_text(encoding="utf-8")
    modules = site_mod.api_modules()
    assert "egmlib.workflow.site" in modules and "egmlib.physics._simulate_numba" not in modules
    for name in modules:
        assert f'id="module-{name}"' in api, f"{name} missing from the API page"
    # markup that docutils could not resolve (an undefined |substitution|) is flagged in the page
    for page in built.rglob("*.html"):
        assert 'class="problematic"' not in page.read_text(encoding="utf-8"), page.name
    # the notebooks' figures are rendered from their stored outputs, not re-executed
    assert len(list((built / "_images").glob("*.png"))) >= 20


def test_stage_rejects_a_tree_without_notebooks(tmp_path: Path):
    (tmp_path / "README.md").write_text("# x\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="notebooks"):
        site_mod.stage(tmp_path, tmp_path / "src")


def _internal_target(built: Path, base: str, href: str) -> tuple[Path, str] | None:
    """The file and fragment an internal link points at (``None`` for an external link)."""
    url = urlparse(href)
    if url.scheme not in ("http", "https") or not href.startswith(base):
        return None
    path = built / unquote(url.path).lstrip("/")
    if path.is_dir():
        path = path / "index.html"
    return path, unquote(url.fragment)


def _check_page(browser, url: str, rel: str, built: Path, server: str) -> tuple[list[str], int]:
    """Open one page; return its problems and the number of internal links checked."""
    problems: list[str] = []

    def note(text: str) -> None:
        problems.append(f"{rel}: {text}")

    page = browser.new_page()
    page.on("console", lambda m: note(f"console {m.type}: {m.text}") if m.type == "error"
            else None)
    page.on("pageerror", lambda e: note(f"page error: {e}"))
    page.on("requestfailed", lambda r: note(f"request failed: {r.url}"))
    page.on("response", lambda r: note(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    try:
        response = page.goto(url, wait_until="load")
        if response is None or response.status != 200:
            note(f"HTTP {None if response is None else response.status}")
        broken = page.evaluate(
            "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
            ".map(i => i.src)")
        problems += [f"{rel}: image not loaded: {src}" for src in broken]
        if rel.startswith("notebooks/") and page.evaluate("document.images.length") == 0:
            note("no image on a notebook page")
        links = 0
        for href in page.evaluate(
                "Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
            target = _internal_target(built, server, href)
            if target is None:
                continue
            links += 1
            path, fragment = target
            if not path.is_file():
                note(f"link to a missing page: {href}")
            elif fragment and path.suffix == ".html" and fragment not in _ids(path):
                note(f"link to a missing anchor: {href}")
    finally:
        page.close()
    return problems, links


def test_every_page_loads_in_a_headless_browser(built: Path, server: str):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    # the site's pages; _static/ holds the theme's template fragments, not pages
    pages = sorted(p.relative_to(built).as_posix() for p in built.rglob("*.html")
                   if p.relative_to(built).parts[0] not in ("_static", "_sources"))
    assert len(pages) >= 8
    problems: list[str] = []
    checked_links = 0
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for rel in pages:
                found, links = _check_page(browser, f"{server}/{rel}", rel, built, server)
                problems += found
                checked_links += links
        finally:
            browser.close()
    assert checked_links > 50
    assert problems == [], "\n".join(problems[:40])
