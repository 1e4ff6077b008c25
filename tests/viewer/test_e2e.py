"""The viewer as a person uses it: headless Chromium (Debian's ``chromium``) drives the pages.

Skipped, with the reason, where ``chromium``, the ``playwright`` package or OpenSeadragon
(``npm ci --prefix src/oncoscope/viewer/web``) is missing. Screenshots are written to the test's
temporary folder and, when ``ONCOSCOPE_ARTIFACTS`` names a folder, there too.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from oncoscope.viewer.assets import INSTALL_HINT, openseadragon_version

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
    ),
    pytest.mark.skipif(
        openseadragon_version() is None, reason=f"OpenSeadragon not installed ({INSTALL_HINT})"
    ),
]
playwright_sync = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(viewer_dir: Path) -> Iterator[str]:
    yield from serving(viewer_dir)


@pytest.fixture(scope="module")
def attention_server(attention_dir: tuple[Path, np.ndarray]) -> Iterator[str]:
    yield from serving(attention_dir[0])


def serving(root: Path) -> Iterator[str]:
    """The viewer over ``root`` on a free local port, in a thread, until the generator ends."""
    import uvicorn

    from oncoscope.viewer.app import create_app

    port = free_port()
    config = uvicorn.Config(create_app(root), host="127.0.0.1", port=port, log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.started, "the viewer did not start"
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def save(image: bytes, name: str, tmp_path: Path) -> np.ndarray:
    (tmp_path / name).write_bytes(image)
    folder = os.environ.get("ONCOSCOPE_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / name).write_bytes(image)
    return np.asarray(Image.open(io.BytesIO(image)).convert("RGB")).astype(int)


def settled(page: Any, items: int = 3) -> None:
    """Wait until OpenSeadragon has every shown image (slide, ``items`` - 1 overlays) loaded."""
    page.wait_for_function(
        "() => { const v = window.oncoscopeViewer;"
        f" if (!v || v.world.getItemCount() < {items}) return false;"
        " for (let i = 0; i < v.world.getItemCount(); i++) { const item = v.world.getItemAt(i);"
        "   if (item.getOpacity() > 0 && !item.getFullyLoaded()) return false; }"
        " return true; }",
        timeout=30000,
    )
    page.wait_for_timeout(700)  # the opacity/replace redraw happens on the next animation frames


def test_slide_page_tiles_and_overlay_toggle(server: str, page: Any, tmp_path: Path) -> None:
    tiles: list[int] = []
    page.on("response", lambda r: tiles.append(r.status) if "/dz/slide/a_files/" in r.url else None)
    page.goto(f"{server}/slide?key=slide/a")
    settled(page)
    assert tiles and all(status == 200 for status in tiles)
    assert page.locator("#legend tr").count() == 1 + 3  # header and one row per class
    assert page.locator("#scalebar-label").inner_text().endswith(("µm", "mm"))
    assert "µm/px" in page.locator("#subtitle").inner_text()
    stage = page.locator(".stage")
    with_heatmap = save(stage.screenshot(), "slide-heatmap.png", tmp_path)
    save(page.screenshot(), "slide-page.png", tmp_path)
    page.locator("#toggle-heatmap").click()
    page.wait_for_timeout(700)
    without = save(stage.screenshot(), "slide-no-overlay.png", tmp_path)
    assert np.abs(with_heatmap - without).mean() > 2, "hiding the heatmap did not change the image"
    page.locator("#toggle-segmentation").click()
    settled(page)
    segmented = save(stage.screenshot(), "slide-segmentation.png", tmp_path)
    assert np.abs(segmented - without).mean() > 2
    page.locator(".class-toggle[data-class='tumour']").click()
    settled(page)
    no_tumour = save(stage.screenshot(), "slide-segmentation-no-tumour.png", tmp_path)
    assert np.abs(no_tumour - segmented).mean() > 0.5, "hiding a class did not change the image"
    box = stage.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4)
    page.wait_for_selector("#probe:not([hidden])", timeout=10000)
    save(page.screenshot(), "slide-probe.png", tmp_path)


def test_ct_slider_moves_slices(server: str, page: Any, tmp_path: Path) -> None:
    page.goto(server + "/")
    page.wait_for_selector("a[href^='/ct?key=']")
    save(page.screenshot(full_page=True), "index.png", tmp_path)
    page.locator("a[href^='/ct?key=']", has_text="patient 1").click()
    loaded = (
        "() => { const i = document.getElementById('ct-image');"
        " return i.complete && i.naturalWidth > 0; }"
    )
    page.wait_for_function(loaded)
    page.wait_for_timeout(500)
    before_src = page.locator("#ct-image").get_attribute("src")
    before = save(page.locator("#stage").screenshot(), "ct-before.png", tmp_path)
    save(page.screenshot(), "ct-page.png", tmp_path)
    slider = page.locator("#slice")
    slider.fill(str(int(slider.get_attribute("max")) - 1))
    page.wait_for_function(loaded)
    page.wait_for_timeout(500)
    after_src = page.locator("#ct-image").get_attribute("src")
    after = save(page.locator("#stage").screenshot(), "ct-after.png", tmp_path)
    assert after_src != before_src
    assert np.abs(before - after).mean() > 1, "moving the slider did not change the slice"
    page.locator("#window").select_option("bone")
    page.wait_for_function(loaded)
    assert "window=bone" in page.locator("#ct-image").get_attribute("src")


def test_gallery_captions_show_the_true_label(server: str, page: Any) -> None:
    page.goto(server + "/")
    page.wait_for_selector(".card .truth")
    captions = page.locator(".card .truth").all_inner_texts()
    assert sorted(captions) == [
        "true healthy · predicted tumour",
        "true tumour · predicted tumour",
        "true tumour · predicted tumour",
    ]


def test_attention_overlay_over_its_slide(attention_server: str, page: Any, tmp_path: Path) -> None:
    page.goto(f"{attention_server}/slide?key=slide/a")
    settled(page, items=4)  # the slide, heatmap, segmentation and attention
    assert page.locator("label[for='toggle-attention-0']").inner_text() == "Attention (mil-out)"
    stage = page.locator(".stage")
    page.locator("#toggle-heatmap").click()  # the attention alone over the slide
    page.wait_for_timeout(700)
    with_attention = save(stage.screenshot(), "slide-attention.png", tmp_path)
    page.locator("#toggle-attention-0").click()
    page.wait_for_timeout(700)
    without = save(stage.screenshot(), "slide-no-attention.png", tmp_path)
    assert np.abs(with_attention - without).mean() > 2, "hiding the attention changed nothing"
