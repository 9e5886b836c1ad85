"""The FastAPI application; the monitor refreshes metrics in a background thread."""

from __future__ import annotations

import hmac
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Response, status
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pgdr import __version__
from pgdr.api.token import check_token
from pgdr.monitoring.metrics import MetricsSnapshot, render_prometheus
from pgdr.monitoring.monitor import Monitor
from pgdr.pool import check_database_health
from pgdr.pool.health import SharedProbe

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
bearer = HTTPBearer(auto_error=False)


def create_app(
    monitor: Monitor,
    token: str,
    background: bool = True,
    health_ttl_s: float = 1.0,
    board: Callable[[], dict[str, Any]] | None = None,
) -> FastAPI:
    """An app serving ``monitor``'s metrics; ``token`` guards everything but /api/health, whose
    probe is single-flight and reused for ``health_ttl_s`` (requests cannot exhaust the DB).

    ``board`` gives the dashboard's data (protection state, incidents, backups, history). The
    OpenAPI schema and its documentation page describe the internals too, so they sit behind
    the token like everything else (the dashboard page itself holds no data).
    """
    check_token(token, "the caller")
    stop = threading.Event()
    probe = SharedProbe(
        lambda: check_database_health(monitor.conninfo, monitor.settings, monitor.pool),
        health_ttl_s,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        thread = None
        if background:
            thread = threading.Thread(target=monitor.run_forever, args=(stop,), daemon=True)
            thread.start()
        yield
        stop.set()
        if thread is not None:
            thread.join(timeout=monitor.settings.connection_timeout_s + 5)

    app = FastAPI(
        title="pgdr",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "A valid token is required (Authorization: Bearer <token>).",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def snapshot() -> MetricsSnapshot:
        return monitor.last or monitor.run_once()

    guarded = [Depends(require_token)]

    @app.get("/api/health")
    def health() -> JSONResponse:
        report = probe.get()
        body = {"healthy": report.healthy, "latency": report.latency_ms}
        code = status.HTTP_200_OK if report.healthy else status.HTTP_503_SERVICE_UNAVAILABLE
        return JSONResponse(body, status_code=code)

    @app.get("/api/monitoring/metrics", dependencies=guarded)
    def metrics_json() -> dict[str, Any]:
        return snapshot().as_dict()

    @app.post("/api/monitoring/refresh", dependencies=guarded)
    def refresh() -> dict[str, Any]:
        return monitor.run_once().as_dict()

    @app.get("/metrics", dependencies=guarded)
    def metrics_prometheus() -> Response:
        return Response(render_prometheus(snapshot()), media_type=PROMETHEUS_TYPE)

    @app.get("/api/incidents", dependencies=guarded)
    def incidents(include_resolved: bool = False) -> list[dict[str, Any]]:
        log = monitor.incidents
        chosen = log.all() if include_resolved else log.open_incidents()
        return [i.as_dict() for i in chosen]

    @app.get("/openapi.json", dependencies=guarded, include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/docs", dependencies=guarded, include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="pgdr API")

    @app.get("/api/dashboard", dependencies=guarded)
    def dashboard_data() -> dict[str, Any]:
        if board is None:
            return {"databases": [snapshot().as_dict()]}
        return board()

    @app.get("/", response_class=HTMLResponse)
    def dashboard() -> str:
        return resources.files("pgdr.api").joinpath("dashboard.html").read_text()

    return app
