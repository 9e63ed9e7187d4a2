"""The run report in a real headless browser (Debian's chromium, driven by selenium), offline.

A small real fit on the digits demo data with the evaluation plugin writes a report; chromium
opens it with every host name unresolvable, and the test checks that each plot was drawn, that
the before/after table holds the run's numbers, and that no http(s) request was made. The
screenshot goes to ``$FINETUNER_TEST_ARTIFACTS`` (else the test's ``tmp_path``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _browser():
    """A headless chromium with networking cut off, or a skip saying what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip(
            "chromium and chromedriver are not on PATH (Debian: apt-get install chromium "
            "chromium-driver; .ci/run installs them)"
        )
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,2400",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--no-proxy-server",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


def _web_requests(driver) -> list[str]:
    """The http(s) URLs the page requested since the last call (its own file:// URL must be
    among the requests seen, or the log would prove nothing)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    assert any(url.startswith("file:") for url in urls), urls
    return [url for url in urls if url.startswith(("http:", "https:"))]


def test_the_report_renders_offline_in_chromium(tmp_path):
    pytest.importorskip("finetuner_evaluation")
    pytest.importorskip("plotly")
    driver = _browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    import finetuner
    from finetuner.demo import demo_options

    try:
        run = finetuner.fit(**demo_options(runs_dir=tmp_path / "runs", epochs=2))
        report = run.report(tmp_path / "report.html")
        driver.get(report.as_uri())
        plots = driver.find_elements(By.CSS_SELECTOR, "div.plotly-graph-div")
        published = {key for record in run.metric_history() for key in record["metrics"]}
        assert len(plots) == 2 + len(published)  # loss per step and per epoch, each metric
        WebDriverWait(driver, 30).until(
            lambda d: all(p.find_elements(By.CSS_SELECTOR, "svg.main-svg g.trace") for p in plots)
        )
        for plot in plots:
            assert plot.find_elements(By.CSS_SELECTOR, ".plot-container svg.main-svg")
            assert plot.find_elements(By.CSS_SELECTOR, "g.trace path")  # a line was drawn

        table = driver.find_element(By.CSS_SELECTOR, "#before-after table")
        rows = {
            cells[0].text: [c.text for c in cells[1:]]
            for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")
            if (cells := row.find_elements(By.TAG_NAME, "td"))
        }
        metrics = run.metrics()
        assert set(rows) == set(metrics["after"])
        for key, (before, after, _change) in rows.items():
            assert before == f"{metrics['before'][key]:.4f}"
            assert after == f"{metrics['after'][key]:.4f}"
        queries = driver.find_element(By.ID, "queries").text
        assert "queries that improved most" in queries

        web = _web_requests(driver)
        assert web == [], f"the report requested {web}"

        folder = Path(os.environ.get("FINETUNER_TEST_ARTIFACTS") or tmp_path)
        folder.mkdir(parents=True, exist_ok=True)
        screenshot = folder / "report-screenshot.png"
        driver.set_window_size(1400, driver.execute_script("return document.body.scrollHeight"))
        assert driver.save_screenshot(str(screenshot))
        print(f"report screenshot: {screenshot}")

        # A notebook shows the same plots from the run's _repr_html_, its JavaScript inline.
        import finetuner.runs.notebook as notebook

        notebook._plotlyjs_shown = False
        cell = tmp_path / "notebook-cell.html"
        cell.write_text(f"<html><body>{run._repr_html_()}</body></html>", encoding="utf-8")
        driver.get(cell.as_uri())
        plots = driver.find_elements(By.CSS_SELECTOR, "div.plotly-graph-div")
        assert len(plots) == 2 + len(published)
        WebDriverWait(driver, 30).until(
            lambda d: all(p.find_elements(By.CSS_SELECTOR, "svg.main-svg g.trace") for p in plots)
        )
        assert (
            f"{metrics['after']['mlp_ndcg_at_k']:.4f}"
            in driver.find_element(By.TAG_NAME, "body").text
        )
        web = _web_requests(driver)
        assert web == [], f"the notebook display requested {web}"
    finally:
        driver.quit()
