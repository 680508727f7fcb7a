"""The web console in a real browser: headless Chromium (Debian `chromium` + `chromium-driver`,
driven by Selenium) against a real server on ML-100K with a replayed experiment.

Skipped where Chromium is not installed, unless LMREC_REQUIRE_BROWSER=1 (CI) makes that a
failure. Screenshots of each page go to $LMREC_SCREENSHOTS (the README's are in docs/), else
to the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmrec.data import Dataset
from lmrec.data.split import leave_one_out
from lmrec.experiments.simulate import held_out, replay, write_store
from lmrec.models import create_model
from lmrec.service import Settings
from lmrec.store import Store
from test_service import ADMIN, READ, WRITE, Server

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _need_browser() -> None:
    missing = [n for n, p in (("chromium", CHROMIUM), ("chromedriver", DRIVER)) if p is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        why = f"no {', '.join(missing)}: apt-get install chromium chromium-driver"
        if os.environ.get("LMREC_REQUIRE_BROWSER") == "1":
            pytest.fail(f"LMREC_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def console_server(ml100k: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _need_browser()
    tmp: Path = tmp_path_factory.mktemp("console")
    split = leave_one_out(ml100k, valid=False)
    url = f"sqlite:///{tmp / 'store.db'}"
    with Store(url) as store:
        write_store(store, split.train)
    models = tmp / "models"
    create_model("popularity").fit(split.train).save(models / "popularity")
    create_model("ease").fit(split.train).save(models / "ease")
    srv = Server(
        Settings(
            db=url,
            models=[f"ease={models / 'ease'}", f"popularity={models / 'popularity'}"],
            api_keys={READ: "read", WRITE: "write", ADMIN: "admin"},
            warm_search=False,
            flush_ms=1.0,
        )
    )
    with srv.client() as c:
        for _ in range(400):
            if len(c.get("/health").json()["loaded"]) == 2:
                break
            time.sleep(0.05)
        body = {
            "name": "popularity-vs-ease",
            "arms": [
                {"name": "A", "model": "popularity", "share": 0.5},
                {"name": "B", "model": "ease", "share": 0.5},
            ],
        }
        assert c.post("/experiments", json=body).status_code == 201
    held = held_out(split.test)
    replay(srv.url, held, read_key=READ, write_key=WRITE, clients=4)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(console_server: Server) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1180",
        "--hide-scrollbars",
    ):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=DriverService(executable_path=DRIVER), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = Path(os.environ.get("LMREC_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _wait(drv, css: str, text: str | None = None, timeout: float = 30):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(drv, timeout)
    if text is None:
        return wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))
    return drv.find_element(By.CSS_SELECTOR, css)


def _login(drv, srv: Server, key: str) -> None:
    drv.get(f"{srv.url}/console/#/login")
    drv.execute_script("sessionStorage.clear(); location.reload()")
    field = _wait(drv, "#key")
    field.clear()
    field.send_keys(key)
    drv.find_element("css selector", "#signin").click()


def test_console_login_overview_models_experiment_and_try_it(
    browser, console_server: Server, shots: Path
) -> None:
    from selenium.webdriver.common.by import By

    drv, srv = browser, console_server
    _login(drv, srv, "wrong-key-123")
    assert "unknown API key" in _wait(drv, "#login-error", "unknown").text
    _login(drv, srv, READ)
    assert _wait(drv, "#n-users", "943").text == "943"
    assert _wait(drv, "#who", "read key").text == "signed in · read key"
    assert drv.find_element(By.CSS_SELECTOR, "#n-items").text == "1,682"
    assert len(drv.find_elements(By.CSS_SELECTOR, "svg polyline")) == 2  # activity, popularity
    drv.save_screenshot(str(shots / "console-overview.png"))

    drv.get(f"{srv.url}/console/#/models")
    rows = _wait(drv, "#models", "ease").find_elements(By.CSS_SELECTOR, "tr")
    assert len(rows) == 3 and "active" in rows[1].text and "loaded" in rows[2].text
    drv.save_screenshot(str(shots / "console-models.png"))

    drv.get(f"{srv.url}/console/#/experiments")
    link = _wait(drv, "#experiments a")
    assert not drv.find_elements(By.CSS_SELECTOR, "#create")  # a read key cannot create
    link.click()
    decision = _wait(drv, "#decision", "winner")
    assert "stop" in decision.text and drv.find_element(By.CSS_SELECTOR, "#winner").text == "B"
    arms = drv.find_elements(By.CSS_SELECTOR, "#arms tr")
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in arms[1:]] == ["popularity", "ease"]
    assert "ok" in drv.find_element(By.CSS_SELECTOR, "#srm").text
    assert float(drv.find_element(By.CSS_SELECTOR, "#p-B").text) < 0.05
    assert not drv.find_elements(By.CSS_SELECTOR, "#stop")
    drv.save_screenshot(str(shots / "console-experiment.png"))

    drv.get(f"{srv.url}/console/#/try?user=1")
    recs = _wait(drv, "#recs tr:nth-child(11)")
    assert recs.is_displayed()
    hist = drv.find_elements(By.CSS_SELECTOR, "#history tr")
    assert len(hist) == 11  # header + the 10 newest events
    items = [
        r.find_elements(By.TAG_NAME, "td")
        for r in drv.find_elements(By.CSS_SELECTOR, "#recs tr")[1:]
    ]
    assert all(cells[2].text.strip() for cells in items)  # a title and a reason for every item
    assert "experiment popularity-vs-ease" in drv.find_element(By.CSS_SELECTOR, "#t-model").text
    seen = {c.find_elements(By.TAG_NAME, "td")[0].text for c in hist[1:]}
    assert not seen & {cells[1].text for cells in items}  # history is never recommended
    drv.save_screenshot(str(shots / "console-try.png"))
    before = [cells[1].text for cells in items]
    drv.execute_script(
        "const s = document.getElementById('t-div'); s.value = '0.9';"
        "s.dispatchEvent(new Event('input'));"
    )
    assert drv.find_element(By.CSS_SELECTOR, "#t-div-v").text == "0.9"
    drv.find_element(By.CSS_SELECTOR, "#t-go").click()
    time.sleep(0.2)
    _wait(drv, "#recs tr:nth-child(11)")
    after = [
        r.find_elements(By.TAG_NAME, "td")[1].text
        for r in drv.find_elements(By.CSS_SELECTOR, "#recs tr")[1:]
    ]
    assert after != before  # the slider re-ranks for diversity

    drv.get(f"{srv.url}/console/#/items")
    _wait(drv, "#uid").send_keys("1")
    drv.find_element(By.CSS_SELECTOR, "#user button").click()
    assert len(_wait(drv, "#history").find_elements(By.CSS_SELECTOR, "tr")) == 11
    drv.save_screenshot(str(shots / "console-items.png"))


def test_console_admin_creates_and_stops_an_experiment(browser, console_server: Server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    drv, srv = browser, console_server
    _login(drv, srv, ADMIN)
    _wait(drv, "#who", "admin key")
    drv.get(f"{srv.url}/console/#/experiments")
    _wait(drv, "#x-name").send_keys("from-console")
    Select(drv.find_element(By.CSS_SELECTOR, "#x-a")).select_by_visible_text("popularity")
    Select(drv.find_element(By.CSS_SELECTOR, "#x-b")).select_by_visible_text("ease")
    drv.find_element(By.CSS_SELECTOR, "#create button").click()
    _wait(drv, "#decision", "continue")
    assert "from-console" in drv.find_element(By.TAG_NAME, "h1").text
    with srv.client(READ) as c:
        listed = {e["name"]: e["state"] for e in c.get("/experiments").json()["experiments"]}
    assert listed["from-console"] == "running"
    _wait(drv, "#stop").click()
    _wait(drv, "h1", "stopped")
    with srv.client(READ) as c:
        got = c.get("/experiments/from-console").json()
    assert got["state"] == "stopped"
