"""The HTTP service as a real process, and its dashboard in a real browser (Chromium)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import Server
from pgdr.cluster import find_free_port

TOKEN = "test-token-0123456789abcdef"
ARTIFACTS = Path(
    os.environ.get("PGDR_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts")
)


@pytest.fixture
def api(pg18: Server, cli_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = find_free_port()
    env = cli_env | {
        "DATABASE_URL": pg18.new_database(),
        "PGDR_API_TOKEN": TOKEN,
        "PGDR_HOME": str(tmp_path / "home"),  # its own records: no backup protects this database
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgdr", "serve", "--port", str(port), "--interval", "5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(base + "/api/health", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield base
    proc.terminate()
    proc.wait(timeout=20)


def test_health_is_public_and_internals_need_the_token(api: str) -> None:
    health = httpx.get(api + "/api/health")
    assert health.status_code == 200
    assert health.json()["healthy"] is True and health.json()["latency"] > 0
    for path in ("/api/monitoring/metrics", "/metrics", "/api/incidents", "/docs", "/openapi.json"):
        assert httpx.get(api + path).status_code == 401
        wrong = httpx.get(api + path, headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    metrics = httpx.get(api + "/api/monitoring/metrics", headers=auth, timeout=30)
    assert metrics.status_code == 200
    body = metrics.json()
    assert body["database"]["healthy"] is True and body["pool"]["pool_size"] >= 0
    assert {"database", "pool", "queries", "errors", "checks"} <= set(body)
    prom = httpx.get(api + "/metrics", headers=auth, timeout=30)
    assert prom.headers["content-type"].startswith("text/plain")
    assert 'pgdr_up{database="default"} 1.0' in prom.text
    if shutil.which("promtool"):
        checked = subprocess.run(
            ["promtool", "check", "metrics"], input=prom.text, capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
    incidents = httpx.get(api + "/api/incidents", headers=auth).json()
    assert "backup_age" in {i["check"] for i in incidents}
    assert "/metrics" in httpx.get(api + "/openapi.json", headers=auth).json()["paths"]
    assert httpx.get(api + "/docs", headers=auth).status_code == 200


def test_token_too_short_is_refused(cli_env: dict[str, str]) -> None:
    from conftest import run_cli

    result = run_cli("serve", env=cli_env | {"PGDR_API_TOKEN": "short"})
    assert result.code == 2 and "at least 16 characters" in result.stderr


@pytest.mark.parametrize("content", ["", "  \n\t \n"])
def test_empty_token_file_is_refused(cli_env: dict[str, str], tmp_path: Path, content: str) -> None:
    from conftest import run_cli

    token_file = tmp_path / "token"
    token_file.write_text(content)
    token_file.chmod(0o600)
    result = run_cli("serve", env=cli_env | {"PGDR_API_TOKEN_FILE": str(token_file)})
    assert result.code == 2 and f"The API token file {token_file} is empty" in result.stderr
    home = tmp_path / "home"
    home.mkdir()
    (home / "api-token").write_text(content)
    result = run_cli("serve", env=cli_env | {"PGDR_HOME": str(home)})
    assert result.code == 2 and "is empty" in result.stderr


@pytest.mark.skipif(shutil.which("chromedriver") is None, reason="chromium-driver not installed")
def test_dashboard_in_chromium(api: str, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,1400",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(api + "/")
        wait = WebDriverWait(driver, 30)
        driver.find_element(By.ID, "token").send_keys("not-the-token")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "error"), "not accepted"))
        assert not driver.find_element(By.ID, "panel").is_displayed()
        field = driver.find_element(By.ID, "token")
        field.clear()
        field.send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "healthy"))
        rows = driver.find_elements(By.CSS_SELECTOR, "#checks tbody tr")
        assert any("database_up" in r.text for r in rows)
        assert driver.find_element(By.ID, "latency").text.endswith("ms")
        # nothing protects this database: red, with the open incident and its runbook action
        assert "red" in driver.find_element(By.ID, "state-default").get_attribute("class")
        wait.until(ec.text_to_be_present_in_element((By.ID, "incident-table"), "backup_age"))
        incident = next(
            r
            for r in driver.find_elements(By.CSS_SELECTOR, "#incident-table tbody tr")
            if "backup_age" in r.text
        )
        assert "P1" in incident.text and "pgdr backup" in incident.text
        assert "No backup yet" in driver.find_element(By.ID, "backups-note").text
        # it refreshes itself: a new round shows up without a reload
        first = driver.find_element(By.ID, "updated").text
        wait.until(lambda d: d.find_element(By.ID, "updated").text != first)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
    finally:
        driver.quit()
