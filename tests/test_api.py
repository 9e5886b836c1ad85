"""The HTTP service as a real process, and its dashboard in a real browser (Chromium)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from conftest import Server
from fixtures.browser import chromium, needs_chromium, screenshot
from fixtures.fleet import fleet_home
from pgdr.api import http_stack
from pgdr.cluster import find_free_port

TOKEN = "test-token-0123456789abcdef"


@contextmanager
def serving(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`pgdr serve` as a real process (a round every 5 s); yields its base URL once it answers,
    and the process."""
    port = find_free_port()
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
            httpx.get(base + "/", timeout=1)  # the page: answered at once, the probes may wait
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    try:
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def api(pg18: Server, cli_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    env = cli_env | {
        "DATABASE_URL": pg18.new_database(),
        "PGDR_API_TOKEN": TOKEN,
        "PGDR_HOME": str(tmp_path / "home"),  # its own records: no backup protects this database
    }
    with serving(env) as (base, _proc):
        yield base


@pytest.fixture
def fleet_api(pg18: Server, cli_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """One `pgdr serve` (no --db) over the two databases of a fleet config; beta is down."""
    down = f"postgresql://postgres@127.0.0.1:{find_free_port()}/beta"  # nobody listens
    urls = {"alpha": pg18.new_database(), "beta": down}
    env = cli_env | fleet_home(tmp_path / "home", urls) | {"PGDR_API_TOKEN": TOKEN}
    env.pop("DATABASE_URL", None)
    with serving(env) as (base, _proc):
        yield base


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


def test_a_hanging_database_is_a_503_within_the_connection_timeout(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A server that accepts the connection and never answers: every one of 100 concurrent
    requests gets a 503 within the connection timeout (1 s, + 0.5 s the probe's bound, + 1.5 s
    for a loaded machine), the first wave waiting for the one probe, the next answered from
    the outage already known, none reset; the service itself is on the fast stack."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:  # never accepts
        url = f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/postgres"
        env = cli_env | {
            "DATABASE_URL": url,
            "DB_CONNECTION_TIMEOUT": "1000",
            "PGDR_API_TOKEN": TOKEN,
            "PGDR_HOME": str(tmp_path / "home"),
        }
        with serving(env) as (base, proc):

            async def wave() -> list[httpx.Response | BaseException]:
                async with httpx.AsyncClient(base_url=base, timeout=3.0) as client:
                    sent = (client.get("/api/health") for _ in range(100))
                    return await asyncio.gather(*sent, return_exceptions=True)

            for answers in (asyncio.run(wave()), asyncio.run(wave())):
                codes = [a.status_code if isinstance(a, httpx.Response) else a for a in answers]
                assert codes == [503] * 100, codes
                assert answers[0].json() == {"healthy": False, "latency": None}  # type: ignore[union-attr]
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
    loop, http = http_stack()
    for module, name in ((loop, "uvloop"), (http, "httptools")):
        # the stack in force is what is installed: uvloop's and httptools' compiled modules
        # are loaded in the serving process exactly when they are installed
        assert (module == name) == (f"/{name}/" in maps), (module, name)


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


def _log_in(driver: WebDriver, token: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def _incident_row(driver: WebDriver, *words: str) -> str:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#incident-table tbody tr")
    return next(r.text for r in rows if all(w in r.text for w in words))


@needs_chromium
def test_dashboard_in_chromium(api: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium() as driver:
        driver.get(api + "/")
        wait = WebDriverWait(driver, 30)
        _log_in(driver, "not-the-token")
        wait.until(ec.text_to_be_present_in_element((By.ID, "error"), "not accepted"))
        assert not driver.find_element(By.ID, "panel").is_displayed()
        _log_in(driver, TOKEN)
        wait.until(
            ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#db-default .status"), "healthy")
        )
        section = driver.find_element(By.ID, "db-default")
        checks = section.find_elements(By.CSS_SELECTOR, ".checks tbody tr")
        assert any("database_up" in r.get_attribute("textContent") for r in checks)
        assert section.find_element(By.CLASS_NAME, "latency").text.endswith("ms")
        # nothing protects this database: red, with the open incident and its runbook action
        assert "red" in driver.find_element(By.ID, "state-default").get_attribute("class")
        wait.until(ec.text_to_be_present_in_element((By.ID, "incident-table"), "backup_age"))
        incident = _incident_row(driver, "backup_age")
        assert "P1" in incident and "default" in incident and "pgdr backup" in incident
        assert "No backup yet" in section.find_element(By.CLASS_NAME, "backups-note").text
        # it refreshes itself: a new round shows up without a reload
        first = driver.find_element(By.ID, "updated").text
        wait.until(lambda d: d.find_element(By.ID, "updated").text != first)
        screenshot(driver, "dashboard.png")


def test_one_serve_watches_every_configured_database(fleet_api: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(fleet_api + "/api/databases").status_code == 401
    health = httpx.get(fleet_api + "/api/health", timeout=30)  # public: no names; all healthy?
    assert health.status_code == 503 and health.json()["healthy"] is False
    assert set(health.json()) == {"healthy", "latency"}
    listed = httpx.get(fleet_api + "/api/databases", headers=auth, timeout=60).json()
    assert [d["name"] for d in listed] == ["alpha", "beta"]
    alpha, beta = listed
    assert alpha["healthy"] is True and beta["healthy"] is False
    assert alpha["state"] == beta["state"] == "red"  # nothing protects alpha either
    assert "backup_age" in {i["check"] for i in alpha["open_incidents"]}
    beta_open = {i["check"]: i["severity"] for i in beta["open_incidents"]}
    assert beta_open["database_up"] == "P0" and beta_open["backup_age"] == "P1"
    one = httpx.get(fleet_api + "/api/monitoring/metrics?db=beta", headers=auth).json()
    assert one["database_name"] == "beta" and one["database"]["healthy"] is False
    both = httpx.get(fleet_api + "/api/monitoring/metrics", headers=auth).json()
    assert set(both["databases"]) == {"alpha", "beta"}
    unknown = httpx.get(fleet_api + "/api/monitoring/metrics?db=gamma", headers=auth)
    assert unknown.status_code == 404 and "watched: alpha, beta" in unknown.json()["detail"]
    prom = httpx.get(fleet_api + "/metrics", headers=auth).text
    assert 'pgdr_up{database="alpha"} 1.0' in prom and 'pgdr_up{database="beta"} 0.0' in prom
    incidents = httpx.get(fleet_api + "/api/incidents?db=alpha", headers=auth).json()
    assert incidents and {i["database"] for i in incidents} == {"alpha"}
    board = httpx.get(fleet_api + "/api/databases/beta", headers=auth).json()
    assert board["name"] == "beta" and "backups" in board and "history" in board


@needs_chromium
def test_dashboard_of_two_databases_in_chromium(fleet_api: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium() as driver:
        driver.get(fleet_api + "/")
        _log_in(driver, TOKEN)
        wait = WebDriverWait(driver, 30)
        for name, answers in (("alpha", "healthy"), ("beta", "DOWN")):
            status = (By.CSS_SELECTOR, f"#db-{name} .status")
            wait.until(ec.text_to_be_present_in_element(status, answers))
            section = driver.find_element(By.ID, f"db-{name}")
            assert section.find_element(By.CLASS_NAME, "title").text == name
            assert "red" in driver.find_element(By.ID, f"state-{name}").get_attribute("class")
            assert "open incident(s)" in section.find_element(By.CLASS_NAME, "incidents-note").text
            incident = _incident_row(driver, name, "backup_age")
            assert "P1" in incident and "pgdr backup" in incident
        assert driver.find_element(By.CSS_SELECTOR, "#db-alpha .latency").text.endswith("ms")
        worst = driver.find_elements(By.CSS_SELECTOR, "#incident-table tbody tr")[0].text
        assert worst.startswith("P0 beta database_up") and "Runbook Scenario 1" in worst
        screenshot(driver, "dashboard-two-databases.png")
