"""The app in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright)
opens the app on examples/bear.mp4 with the real MobileSAM weights, clicks on the bear, checks
that the canvas turns the bear's colour there and nowhere far off, propagates forward, scrubs to
the last frame, exports and downloads the zip, and reads the exported files back.

Skipped with a reason when chromium or Playwright is missing, unless SAMTRACK_REQUIRE_BROWSER=1
(CI) makes that a failure. Screenshots go to the test's tmp folder (path printed); with
SAMTRACK_SCREENSHOTS=DIR they are copied there too. Kept short: the first 6 frames of the clip.
"""
from __future__ import annotations

import io
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
N_FRAMES = 6
BEAR_CLICK = (311, 290)  # on the bear's body in frame 0 (examples/clicks.json)
NEGATIVE_CLICK = (110, 400)  # the rock under the bear's front, inside the mask on the last frame


def _require(what: str) -> None:
    if os.environ.get("SAMTRACK_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{what} is required (SAMTRACK_REQUIRE_BROWSER=1) but missing")
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        _require("chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require("playwright (pip install playwright)")
    pytest.importorskip("fastapi", reason="the app needs samtrack[app]")
    with sync_playwright() as p:
        # --no-sandbox: CI and containers run as root, where Chromium's sandbox cannot start.
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def canvas_pixels(page) -> np.ndarray:
    """The canvas's RGB pixels, exactly (a PNG data URL: fast, where getImageData's numbers
    through JSON take seconds)."""
    import base64

    url = page.evaluate("() => document.getElementById('canvas').toDataURL('image/png')")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        return np.asarray(image.convert("RGB"))


def click_canvas(page, x: float, y: float, button: str = "left") -> None:
    box = page.locator("#canvas").bounding_box()
    width, height = page.evaluate("() => [canvas.width, canvas.height]")
    page.mouse.click(box["x"] + x * box["width"] / width, box["y"] + y * box["height"] / height, button=button)


def test_click_propagate_scrub_export(browser, mobilesam_checkpoint: Path, tmp_path: Path) -> None:
    import av

    from samtrack.api import VideoPredictor
    from samtrack.app.server import BackgroundServer, create_app
    from samtrack.config import load_config
    from samtrack.palette import davis_palette

    started = time.perf_counter()

    def phase(name: str) -> None:
        print(f"browser test: {name} at {time.perf_counter() - started:.1f} s")

    config = load_config("samtrack", [f"video.max_frames={N_FRAMES}", f"segmenter.checkpoint={mobilesam_checkpoint}"])
    predictor = VideoPredictor.from_config(config, log=lambda m: None)
    predictor.keep_recent_embeddings(4)
    out = tmp_path / "out"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    app = create_app(predictor, out, [REPO / "examples" / "bear.mp4"], log=print)
    with BackgroundServer(app) as url:
        page = browser.new_page(viewport={"width": 1300, "height": 760}, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        phase("model loaded, server up")
        page.goto(url)
        page.wait_for_selector("#canvas[data-drawn^='0:']")
        phase("page shown")
        before = canvas_pixels(page)
        assert before.shape == (480, 854, 3)

        # A negative click with no positive one yet: a one-line message in the page.
        click_canvas(page, 600, 100, button="right")
        page.wait_for_selector("#error:not([hidden])")
        assert "a negative click needs a positive click" in page.inner_text("#error")

        # One click on the bear: its mask appears in the object's colour around the click.
        drawn = page.get_attribute("#canvas", "data-drawn")
        click_canvas(page, *BEAR_CLICK)
        page.wait_for_function(f"document.getElementById('canvas').dataset.drawn !== '{drawn}'")
        after = canvas_pixels(page)
        page.screenshot(path=str(shots / "1-click.png"))
        changed = np.abs(after.astype(int) - before.astype(int)).sum(-1) > 40
        x, y = BEAR_CLICK
        assert changed[y - 10 : y + 10, x - 10 : x + 10].mean() > 0.9  # under the click
        assert 0.03 < changed.mean() < 0.4, changed.mean()  # a bear, not the whole frame
        # Not the wall above the bear nor the rocks and leaves right of it.
        assert changed[:150].mean() < 0.01 and changed[:, 600:].mean() < 0.01
        # The change is the overlay of object 1's colour (half transparent), not noise.
        colour = davis_palette()[1].astype(int)
        towards = np.abs(after[changed].astype(int) - colour).sum(-1) < np.abs(before[changed].astype(int) - colour).sum(-1)
        assert towards.mean() > 0.95
        status = page.inner_text("#status")
        print(f"browser: first click -> {status}")
        # Another click on the same frame costs a decoder call only (the embedding is kept).
        drawn = page.get_attribute("#canvas", "data-drawn")
        click_canvas(page, 380, 300)
        page.wait_for_function(f"document.getElementById('canvas').dataset.drawn !== '{drawn}'")
        print(f"browser: second click -> {page.inner_text('#status')}")

        phase("clicked")
        # Propagate forward from frame 0; results stream in; wait for the end.
        page.click("#prop-forward")
        # Close the browser tab mid-propagation: the pass goes on; a new tab picks it up.
        page.wait_for_function("document.getElementById('status').textContent.startsWith('propagate')")
        page.close()
        page = browser.new_page(viewport={"width": 1300, "height": 760}, accept_downloads=True)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_selector("body[data-job='propagate:done']", timeout=120_000)
        job = page.request.get(f"{url}api/sessions/{page.eval_on_selector('#session', 'e => e.value')}/job").json()["job"]
        assert job["state"] == "done" and job["done"] == N_FRAMES

        phase("propagated")
        # Scrub to the last frame: the bear is still covered.
        page.evaluate("""() => { const s = document.getElementById('scrub'); s.value = s.max;
                                 s.dispatchEvent(new Event('input')); }""")
        last = N_FRAMES - 1
        page.wait_for_selector(f"#canvas[data-drawn^='{last}:']")
        page.screenshot(path=str(shots / "2-last-frame.png"))
        assert page.inner_text("#frameno").startswith(f"{last} /")
        frame = np.asarray(Image.open(io.BytesIO(page.request.get(f"{url}api/sessions/"
                           f"{page.eval_on_selector('#session', 'e => e.value')}/frames/{last}.jpg").body())).convert("RGB"))
        covered = np.abs(canvas_pixels(page).astype(int) - frame.astype(int)).sum(-1) > 40
        assert 0.03 < covered.mean() < 0.4 and covered[y - 10 : y + 10, x - 10 : x + 10].mean() > 0.5

        # Correct the last frame: a right-click (negative point) inside the mask shrinks it;
        # Ctrl+Z gives the frame back exactly as propagation left it.
        propagated = canvas_pixels(page)
        drawn = page.get_attribute("#canvas", "data-drawn")
        click_canvas(page, *NEGATIVE_CLICK, button="right")
        page.wait_for_function(f"document.getElementById('canvas').dataset.drawn !== '{drawn}'")
        page.screenshot(path=str(shots / "3-correction.png"))
        corrected = np.abs(canvas_pixels(page).astype(int) - frame.astype(int)).sum(-1) > 40
        print(f"browser: correction -> {page.inner_text('#status')}; covered {covered.mean():.3f} -> {corrected.mean():.3f}")
        assert corrected.mean() < covered.mean() - 0.005
        drawn = page.get_attribute("#canvas", "data-drawn")
        page.keyboard.press("Control+z")
        page.wait_for_function(f"document.getElementById('canvas').dataset.drawn !== '{drawn}'")
        assert np.array_equal(canvas_pixels(page), propagated)

        phase("corrected")
        # Export (the page's default formats: matte PNGs, FFV1 matte, VP9 cut-out) and download.
        page.click("#export")
        page.wait_for_selector("body[data-job='export:done']", timeout=60_000)
        with page.expect_download() as download:
            page.click("#downloads a")
        archive = tmp_path / "export.zip"
        download.value.save_as(archive)
        page.screenshot(path=str(shots / "4-exported.png"))
        phase("exported")
        assert not errors, errors
        assert page.is_hidden("#error")

    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "export")
    export = tmp_path / "export"
    pngs = sorted((export / "matte" / "object_1").iterdir())
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(N_FRAMES)]
    with Image.open(pngs[0]) as image:
        matte0 = np.asarray(image)
    assert matte0.shape == (480, 854) and matte0[y, x] == 255 and 0.03 < (matte0 == 255).mean() < 0.4
    with av.open(str(export / "matte" / "object_1.mkv")) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="gray") for f in container.decode(stream)]
        assert stream.average_rate == 24 and (stream.width, stream.height) == (854, 480)
    assert len(frames) == N_FRAMES and np.array_equal(frames[0], matte0)
    with av.open(str(export / "cutout" / "object_1.webm")) as container:
        stream = container.streams.video[0]
        ctx = av.codec.CodecContext.create("libvpx-vp9", "r")
        decoded = [f for p in container.demux(stream) if p.size for f in ctx.decode(p)] + list(ctx.decode(None))
    alpha = decoded[0].to_ndarray(format="rgba")[..., 3]
    assert len(decoded) == N_FRAMES and ((alpha > 127) == (matte0 == 255)).mean() > 0.99

    print(f"screenshots: {shots}")
    keep = os.environ.get("SAMTRACK_SCREENSHOTS")
    if keep:
        shutil.copytree(shots, keep, dirs_exist_ok=True)
