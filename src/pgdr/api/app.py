"""The FastAPI application over one or several watched databases.

Each database has its monitor, refreshed in a background thread of its own. ``/api/health`` is
public and says only whether every watched database answers (and the slowest round trip); every
route that reveals internals (metrics, incidents, the dashboard's data, the OpenAPI schema and
its documentation page) requires the bearer token. The dashboard page itself holds no data.

With one database the runbook's endpoints keep their single-database shape; with several,
``?db=NAME`` chooses one and without it they answer ``{"databases": {NAME: ...}}``.
``/metrics`` always carries every database, told apart by its ``database`` label.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Response, status
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pgdr import __version__
from pgdr.api.answers import HealthAnswers, PrometheusAnswers
from pgdr.api.token import check_token
from pgdr.config import PgdrSettings
from pgdr.core.errors import ConfigError
from pgdr.monitoring.metrics import MetricsSnapshot
from pgdr.monitoring.monitor import Monitor
from pgdr.pool import check_database_health
from pgdr.pool.health import SharedProbe
from pgdr.watch import MonitorSetup, adopt_monitor
from pgdr.watch.dashboard import dashboard_data, database_board

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
bearer = HTTPBearer(auto_error=False)
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def _lifespan(monitors: Sequence[Monitor], background: bool) -> Lifespan:
    """Start one monitor thread per database with the app; stop and join them with it."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        threads = [
            threading.Thread(target=m.run_forever, args=(stop,), daemon=True, name=m.database)
            for m in (monitors if background else [])
        ]
        for thread in threads:
            thread.start()
        yield
        stop.set()  # a round under way finishes (its records stay whole), within one deadline
        grace = max((m.settings.connection_timeout_s for m in monitors), default=0) + 5
        deadline = time.monotonic() + grace
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    return lifespan


def _token_guard(token: str) -> Callable[..., Awaitable[None]]:
    async def require_token(  # async: checked on the event loop, no worker thread per request
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "A valid token is required (Authorization: Bearer <token>).",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_token


def _probe(monitor: Monitor, ttl_s: float) -> SharedProbe:
    return SharedProbe(
        lambda: check_database_health(monitor.conninfo, monitor.settings, monitor.pool), ttl_s
    )


def _health_router(monitors: Sequence[Monitor], ttl_s: float) -> APIRouter:
    """Public: one single-flight probe per database, each reused for ``ttl_s`` (see
    :mod:`pgdr.api.answers`: a request almost never waits, and never in a thread of its own)."""
    answers = HealthAnswers([_probe(m, ttl_s) for m in monitors], ttl_s)
    router = APIRouter()

    @router.get("/api/health")
    async def health() -> Response:
        body, code = await answers.answer()
        return Response(body, status_code=code, media_type="application/json")

    return router


def _chosen(setups: Sequence[MonitorSetup], db: str | None) -> list[MonitorSetup]:
    if db is None:
        return list(setups)
    chosen = [s for s in setups if s.name == db]
    if not chosen:
        watched = ", ".join(s.name for s in setups)
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"No database named {db!r} is watched (watched: {watched})."
        )
    return chosen


def _shaped(snapshots: list[MetricsSnapshot]) -> dict[str, Any]:
    if len(snapshots) == 1:
        return snapshots[0].as_dict()
    return {"databases": {s.database: s.as_dict() for s in snapshots}}


def _latest(setup: MonitorSetup) -> MetricsSnapshot:
    return setup.monitor.last or setup.monitor.run_once()


def _summary(setup: MonitorSetup) -> dict[str, Any]:
    snap = _latest(setup)
    data = snap.as_dict()
    return {
        "name": snap.database,
        "state": data["state"],
        "healthy": snap.healthy,
        "latency_ms": snap.latency_ms,
        "open_incidents": [
            {k: i[k] for k in ("id", "severity", "check", "message", "opened_at")}
            for i in snap.incidents
        ],
        "failed_checks": data["errors"]["failed_checks"],
        "collected_at": snap.collected_at,
    }


def _monitoring_router(setups: Sequence[MonitorSetup]) -> APIRouter:
    router = APIRouter()

    @router.get("/api/monitoring/metrics")
    def metrics_json(db: str | None = None) -> dict[str, Any]:
        return _shaped([_latest(s) for s in _chosen(setups, db)])

    @router.post("/api/monitoring/refresh")
    def refresh(db: str | None = None) -> dict[str, Any]:
        return _shaped([s.monitor.run_once() for s in _chosen(setups, db)])

    prometheus = PrometheusAnswers([s.monitor for s in setups])

    @router.get("/metrics")
    async def metrics_prometheus() -> Response:
        return Response(await prometheus.answer(), media_type=PROMETHEUS_TYPE)

    @router.get("/api/incidents")
    def incidents(include_resolved: bool = False, db: str | None = None) -> list[dict[str, Any]]:
        out = []
        for setup in _chosen(setups, db):
            log = setup.monitor.incidents
            chosen = log.all() if include_resolved else log.open_incidents()
            out += [i.as_dict() | {"database": setup.name} for i in chosen]
        return out

    return router


def _dashboard_router(setups: Sequence[MonitorSetup]) -> APIRouter:
    router = APIRouter()

    @router.get("/api/databases")
    def databases() -> list[dict[str, Any]]:
        return [_summary(s) for s in setups]

    @router.get("/api/databases/{name}")
    def database(name: str) -> dict[str, Any]:
        return database_board(_chosen(setups, name)[0])

    @router.get("/api/dashboard")
    def dashboard() -> dict[str, Any]:
        return dashboard_data(setups)

    return router


def _docs_router(app: FastAPI) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/openapi.json")
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @router.get("/docs")
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="pgdr API")

    return router


def _page_router() -> APIRouter:
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    def page() -> str:
        return resources.files("pgdr.api").joinpath("dashboard.html").read_text()

    return router


def create_app(
    watched: Monitor | Sequence[MonitorSetup],
    token: str,
    background: bool = True,
    health_ttl_s: float = 1.0,
) -> FastAPI:
    """An app over the watched databases' monitors (configuration order; a lone monitor is
    adopted with the settings of the environment); ``token`` guards everything but
    /api/health and the dashboard page (see the module docstring)."""
    check_token(token, "the caller")
    if isinstance(watched, Monitor):
        watched = [adopt_monitor(watched, PgdrSettings())]
    setups = list(watched)
    if not setups:
        raise ConfigError("There is no database to watch; configure one in pgdr.toml.")
    monitors = [s.monitor for s in setups]
    app = FastAPI(
        title="pgdr",
        version=__version__,
        lifespan=_lifespan(monitors, background),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    guarded = [Depends(_token_guard(token))]
    app.include_router(_health_router(monitors, health_ttl_s))
    app.include_router(_monitoring_router(setups), dependencies=guarded)
    app.include_router(_dashboard_router(setups), dependencies=guarded)
    app.include_router(_docs_router(app), dependencies=guarded)
    app.include_router(_page_router())
    return app
