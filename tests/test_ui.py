"""The web page at /ui, driven by a real headless Chromium against a real ``bentoml serve``.

Every displayed number is compared with the API's own answer for the same file, fetched here
with ``requests``. The browser resolves no host but 127.0.0.1, so every test also runs offline.
Set ``SARVEG_UI_SCREENSHOT=docs/ui-scene.png`` to write the README's screenshot of the scene view.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import requests
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

import sarveg
from sarveg import bands
from testkit.bundles import region_tiles
from testkit.scenes import write_region_scene
from testkit.tiles import s1grd_db, write_geotiff
from tests.conftest import UPLOAD_CAP_MB, Served

SCREENSHOT_ENV = "SARVEG_UI_SCREENSHOT"
WAIT_S = 30.0
# Windows of the test scene (4 x 6): two blocks from other regions (unreliable), two empty.
SCENE_ROWS, SCENE_COLS = 4, 6
SCENE_REGIONS: dict[tuple[int, int], str | None] = {
    **{(r, c): "south_america" for r in (0, 1) for c in (4, 5)},
    (2, 5): "china",
    (3, 0): None,
    (3, 1): None,
}
HATCH_RGB = (200, 0, 143)  # app.js HATCH


def _browser_paths() -> tuple[str, str]:
    chromium = next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip(
            "chromium and chromedriver are not installed (make test installs the Debian "
            "packages chromium and chromium-driver)"
        )
    return chromium, driver


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[WebDriver]:
    """Headless Chromium that resolves no host but the loopback address: the network is gone."""
    chromium, driver = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-dev-shm-usage",
        "--window-size=1280,1250",
        "--force-device-scale-factor=1",
        # Every name resolves to nothing and no proxy is reachable: only 127.0.0.1 answers.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=127.0.0.1",
        "--disable-background-networking",
        "--disable-component-update",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture(scope="module")
def ui_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ui-files")
    rng = np.random.default_rng(7)
    ood = region_tiles("s1grd", "south_america", 1, 24, rng)[0]
    good = write_geotiff(d / "tile.tif", s1grd_db(), bands.S1GRD_RAW_BANDS)
    truncated = d / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[:900])
    noise = d / "noise.tif"
    noise.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    too_large = d / "too_large.tif"
    too_large.write_bytes(b"II*\x00" + bytes(int(UPLOAD_CAP_MB * 2**20)))
    return {
        "tile": good,
        "ood_tile": write_geotiff(d / "ood.tif", ood, bands.S1GRD_CHANNELS),
        "scene": write_region_scene(d / "scene.tif", SCENE_ROWS, SCENE_COLS, SCENE_REGIONS),
        "truncated": truncated,
        "noise": noise,
        "too_large": too_large,
    }


def api(served: Served, route: str, path: Path) -> requests.Response:
    with path.open("rb") as f:
        return requests.post(f"{served.url}/{route}", files={"tile": (path.name, f)}, timeout=60)


def wait_state(browser: WebDriver, *states: str) -> str:
    def reached(driver: WebDriver) -> str | bool:
        state = driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")
        return state if state in states else False

    try:
        return WebDriverWait(browser, WAIT_S).until(reached)
    except TimeoutException:
        logs = browser.get_log("browser")
        raise AssertionError(f"page never reached {states}; console: {logs}") from None


def open_page(browser: WebDriver, served: Served) -> None:
    browser.get(f"{served.url}/ui/")
    wait_state(browser, "idle")


def upload(browser: WebDriver, kind: str, path: Path) -> str:
    browser.find_element(By.CSS_SELECTOR, f"input[name=kind][value={kind}]").click()
    browser.find_element(By.ID, "file").send_keys(str(path))
    return wait_state(browser, "done", "error")


def text(browser: WebDriver, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).text


def numbers(shown: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", shown)]


def shown_p(shown: str) -> float:
    """The p-value a text shows (p = 0.123, or < 0.001 as 0)."""
    match = re.search(r"(<\s*)?(\d\.\d{3})", shown)
    assert match, shown
    return 0.0 if match.group(1) else float(match.group(2))


def assert_p(shown: str, expected: float) -> None:
    if expected < 0.001:
        assert "< 0.001" in shown, shown
    else:
        assert shown_p(shown) == pytest.approx(expected, abs=5e-4), shown


@pytest.mark.parametrize(("name", "unreliable"), [("tile", False), ("ood_tile", True)])
def test_tile_view_shows_the_api_answer(
    browser: WebDriver, served: Served, ui_files: dict[str, Path], name: str, unreliable: bool
) -> None:
    answer = api(served, "predict", ui_files[name]).json()
    ood = answer["ood"]
    assert ood["unreliable"] is unreliable  # the file is what the case says it is
    open_page(browser, served)
    assert upload(browser, "tile", ui_files[name]) == "done"

    assert float(text(browser, "tile-veg")) == pytest.approx(answer["vegetation_pct"], abs=0.051)
    coverage, low, high = numbers(text(browser, "tile-interval"))
    assert coverage == round(answer["interval"]["coverage"] * 100)
    assert low == pytest.approx(answer["interval"]["low"], abs=0.051)
    assert high == pytest.approx(answer["interval"]["high"], abs=0.051)
    verdict = text(browser, "tile-verdict")
    if unreliable:
        assert "unlike anything the model was calibrated on: do not trust" in verdict
    else:
        assert "looks like the calibration data" in verdict and "trust" not in verdict
    assert_p(verdict, ood["p_value"])
    assert text(browser, "tile-nearest") == ood["nearest_region"]
    plausible = text(browser, "tile-plausible")
    if ood["plausible_regions"]:
        assert plausible == ", ".join(ood["plausible_regions"])
    else:
        assert plausible.startswith("none")

    rows = browser.find_elements(By.CSS_SELECTOR, "#tile-regions tbody tr")
    assert [r.get_attribute("data-region") for r in rows] == list(ood["region_p_values"])
    for row in rows:
        region = row.get_attribute("data-region")
        p_cell, distance_cell, swd_cell = row.find_elements(By.TAG_NAME, "td")
        assert_p(p_cell.text, ood["region_p_values"][region])
        assert float(distance_cell.text) == pytest.approx(
            ood["knn_distance_by_region"][region], abs=5e-4
        )
        assert float(swd_cell.text) == pytest.approx(ood["swd_by_region"][region], abs=5e-4)

    shown_input = dict(
        zip(
            [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#tile-input dt")],
            [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#tile-input dd")],
            strict=True,
        )
    )
    assert shown_input["kind"] == answer["input"]["kind"]
    assert shown_input["layout"] == answer["input"]["layout"]
    assert shown_input["units"] == f"{answer['input']['units']} ({answer['input']['units_source']})"
    assert browser.find_element(By.ID, "scene-view").is_displayed() is False


def hatched_cells(browser: WebDriver) -> set[tuple[int, int]]:
    """The (row, col) of every map cell whose pixels contain the hatch colour, read back."""
    script = """
    const [rows, cols, hatch] = arguments;
    const canvas = document.getElementById('scene-map');
    const ctx = canvas.getContext('2d');
    const w = canvas.width / cols, h = canvas.height / rows;
    const found = [];
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
      const x = Math.round(c * w), y = Math.round(r * h);
      const px = ctx.getImageData(x, y, Math.floor(w), Math.floor(h)).data;
      for (let i = 0; i < px.length; i += 4) {
        if (Math.abs(px[i] - hatch[0]) < 8 && px[i + 1] < 8 && Math.abs(px[i + 2] - hatch[2]) < 8) {
          found.push([r, c]); break;
        }
      }
    }
    return found;
    """
    found = browser.execute_script(script, SCENE_ROWS, SCENE_COLS, list(HATCH_RGB))
    return {(r, c) for r, c in found}


def click_cell(browser: WebDriver, row: int, col: int) -> None:
    canvas = browser.find_element(By.ID, "scene-map")
    cell = int(canvas.get_attribute("data-cell"))
    x = (col + 0.5) * cell - canvas.size["width"] / 2
    y = (row + 0.5) * cell - canvas.size["height"] / 2
    ActionChains(browser).move_to_element_with_offset(canvas, int(x), int(y)).click().perform()


def detail(browser: WebDriver) -> dict[str, str]:
    panel = browser.find_element(By.ID, "window-detail")
    keys = [e.text for e in panel.find_elements(By.TAG_NAME, "dt")]
    return dict(zip(keys, [e.text for e in panel.find_elements(By.TAG_NAME, "dd")], strict=True))


def assert_window(browser: WebDriver, window: dict[str, Any]) -> None:
    shown = detail(browser)
    assert browser.find_element(By.ID, "window-detail").get_attribute("data-row") == str(
        window["row"]
    )
    assert numbers(shown["bounds (l, b, r, t)"]) == pytest.approx(window["bounds"], abs=0.006)
    if "ood" in window:
        assert numbers(shown["vegetation"])[0] == pytest.approx(window["vegetation_pct"], abs=0.051)
        assert_p(shown["p-value"], window["ood"]["p_value"])
        assert ("do not trust" in shown["verdict"]) is window["ood"]["unreliable"]
    else:
        assert shown["skipped"] == window["reason"]


def test_scene_view_draws_the_api_answer(
    browser: WebDriver, served: Served, ui_files: dict[str, Path], downloads: Path
) -> None:
    answer = api(served, "predict_scene", ui_files["scene"]).json()
    summary = answer["summary"]
    unreliable = {(t["row"], t["col"]) for t in answer["tiles"] if t["ood"]["unreliable"]}
    # The scene mixes both kinds of windows and skipped ones, so the counts below can fail.
    assert 0 < len(unreliable) < len(answer["tiles"]) and answer["skipped"]
    open_page(browser, served)
    assert upload(browser, "scene", ui_files["scene"]) == "done"

    canvas = browser.find_element(By.ID, "scene-map")
    assert int(canvas.get_attribute("data-hatched")) == len(unreliable)
    assert int(canvas.get_attribute("data-skipped")) == len(answer["skipped"])
    assert hatched_cells(browser) == unreliable  # read back from the canvas pixels

    assert int(text(browser, "sum-tiles")) == summary["tile_count"] == len(answer["tiles"])
    assert numbers(text(browser, "sum-skipped"))[0] == summary["skipped_tile_count"]
    assert numbers(text(browser, "sum-unreliable"))[0] == pytest.approx(
        100 * summary["unreliable_tile_share"], abs=0.051
    )
    veg = summary["vegetation_pct"]
    assert numbers(text(browser, "sum-mean"))[0] == pytest.approx(veg["mean"], abs=0.051)
    assert numbers(text(browser, "sum-quantiles")) == pytest.approx(
        [veg[q] for q in ("p10", "p25", "p50", "p75", "p90")], abs=0.051
    )
    assert_p(text(browser, "sum-p"), summary["ood"]["p_value"])
    assert text(browser, "sum-nearest") == summary["ood"]["nearest_region"]
    assert ("do not trust" in text(browser, "scene-verdict")) is summary["ood"]["unreliable"]

    # Keyboard: focus the map, Home selects the top-left window, the arrows move.
    by_cell = {(w["row"], w["col"]): w for w in answer["tiles"] + answer["skipped"]}
    canvas.send_keys(Keys.HOME, Keys.ARROW_RIGHT)
    assert_window(browser, by_cell[(0, 1)])
    canvas.send_keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN, Keys.ARROW_DOWN, Keys.ARROW_LEFT)
    assert_window(browser, by_cell[(3, 0)])  # a skipped window and its reason
    # Mouse: click an unreliable window.
    click_cell(browser, 0, 5)
    assert_window(browser, by_cell[(0, 5)])

    if os.environ.get(SCREENSHOT_ENV):
        # Tall enough for the synthetic banner, the upload panel and the scene view at once.
        size = browser.get_window_size()
        browser.set_window_size(1280, 1720)
        click_cell(browser, 1, 4)
        browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
        time.sleep(0.3)
        assert browser.save_screenshot(os.environ[SCREENSHOT_ENV])
        browser.set_window_size(size["width"], size["height"])

    # Downloads: the JSON is the answer; the map is the GeoTIFF of /predict_scene_map.
    browser.find_element(By.ID, "download-json").click()
    browser.find_element(By.ID, "download-map").click()
    saved_json, saved_map = downloads / "scene_scene.json", downloads / "scene_map.tif"
    # Chromium writes to a .crdownload file and renames it once complete.
    deadline = time.monotonic() + WAIT_S
    while not (saved_json.exists() and saved_map.exists()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert json.loads(saved_json.read_text()) == answer
    with rasterio.open(saved_map) as dst:
        assert dst.descriptions == ("vegetation_pct", "ood_p_value", "unreliable")
        flags = dst.read(3)
        assert {(int(r), int(c)) for r, c in zip(*np.nonzero(flags == 1), strict=True)} == (
            unreliable
        )


@pytest.mark.parametrize(
    ("name", "kind", "route"),
    [
        ("noise", "tile", "predict"),
        ("truncated", "scene", "predict_scene"),
        ("too_large", "tile", "predict"),
    ],
)
def test_broken_file_shows_the_server_message(
    browser: WebDriver,
    served: Served,
    ui_files: dict[str, Path],
    name: str,
    kind: str,
    route: str,
) -> None:
    response = api(served, route, ui_files[name])
    assert 400 <= response.status_code < 500
    message = response.json()["error"]
    open_page(browser, served)
    assert upload(browser, kind, ui_files[name]) == "error"
    assert browser.find_element(By.ID, "error").is_displayed()
    assert text(browser, "error-message") == message
    assert not browser.find_element(By.ID, f"{kind}-view").is_displayed()


def test_page_works_offline_and_loads_only_from_the_service(
    browser: WebDriver, served: Served, ui_files: dict[str, Path]
) -> None:
    # The block is real: this browser reaches no other host.
    with pytest.raises(WebDriverException, match=r"net::ERR_"):
        browser.get("http://example.com/")
    open_page(browser, served)
    # And the page itself may not reach one (its Content-Security-Policy).
    outside = browser.execute_async_script(
        "const done = arguments[0];"
        "fetch('http://example.com/', {mode: 'no-cors'}).then(() => done('reached'),"
        " (e) => done('refused: ' + e.message));"
    )
    assert outside.startswith("refused"), outside
    assert upload(browser, "tile", ui_files["tile"]) == "done"
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".concat(performance.getEntriesByType('navigation').map(e => e.name))"
    )
    assert any(r.endswith("/ui/app.js") for r in resources)
    assert any(r.endswith("/ui/style.css") for r in resources)
    assert any(r.endswith("/predict") for r in resources)
    assert all(r.startswith(served.url + "/") for r in resources), resources
    assert browser.execute_script("return document.fonts.size") == 0  # system fonts only
    policy = requests.get(f"{served.url}/ui/", timeout=10).headers["content-security-policy"]
    assert "default-src 'self'" in policy


def test_model_card_panel(browser: WebDriver, served: Served) -> None:
    card = requests.get(f"{served.url}/model_card", timeout=10).json()
    open_page(browser, served)
    articles = browser.find_elements(By.CSS_SELECTOR, "#card-body article")
    assert [a.get_attribute("data-bundle") for a in articles] == [
        b["name"] for b in card["bundles"]
    ]
    for article, bundle in zip(articles, card["bundles"], strict=True):
        shown = dict(
            zip(
                [e.text for e in article.find_elements(By.TAG_NAME, "dt")],
                [e.text for e in article.find_elements(By.TAG_NAME, "dd")],
                strict=True,
            )
        )
        assert shown["bands"] == ", ".join(bundle["band_names"])
        measured = bundle["ood"]["measured"]
        assert numbers(shown["measured false flags"])[:2] == pytest.approx(
            [100 * measured["false_flag_rate"], measured["n_in_distribution"]], abs=0.051
        )
        assert numbers(shown["measured coverage"])[0] == pytest.approx(
            100 * measured["interval_coverage"], abs=0.051
        )
    banner = browser.find_element(By.ID, "synthetic-banner")
    synthetic = [b["name"] for b in card["bundles"] if b["provenance"]["synthetic"]]
    assert synthetic  # the tiny bundles are synthetic: the banner must say so
    assert banner.is_displayed() and all(name in banner.text for name in synthetic)


def test_openapi_and_front_page_link_to_the_page(browser: WebDriver, served: Served) -> None:
    info = requests.get(f"{served.url}/docs.json", timeout=10).json()["info"]
    assert info["title"] == "sarveg"
    assert info["version"] == sarveg.__version__
    assert "Sentinel-1" in info["description"] and "](ui/)" in info["description"]
    browser.get(f"{served.url}/")
    link = WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info a[href='ui/']")
    )[0]
    shown = browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .description h1").text
    assert shown == f"sarveg {sarveg.__version__}"
    assert link.text == "Open the web page"
    # Swagger UI opens description links in a new tab: follow the resolved address here.
    assert link.get_property("href") == f"{served.url}/ui/"
