"""The HTTP server of ``pgdr serve`` and ``pgdr agent --serve``: uvicorn on its fast stack.

uvloop (the event loop) and httptools (the HTTP/1.1 parser) are dependencies of pgdr; where
they are not installed (a platform without their wheels) the server runs on asyncio and h11.
Idle keep-alive connections are kept longer than a load balancer keeps its own (AWS ALB and
nginx: 60 s), so a balancer never sends a request on a connection the server is closing (the
client sees a reset); access logs are off (one log line per health check is noise).
"""

from __future__ import annotations

from importlib.util import find_spec

import uvicorn
from fastapi import FastAPI

KEEP_ALIVE_S = 75  # seconds an idle connection stays open (more than a balancer's 60 s)
BACKLOG = 4096  # connections the kernel queues before the server accepts them


def http_stack() -> tuple[str, str]:
    """(event loop, HTTP parser) the server runs on: the fast ones when installed."""
    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    http = "httptools" if find_spec("httptools") else "h11"
    return loop, http


def http_server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    """The server for ``app``; ``.run()`` serves until SIGTERM/SIGINT in the main thread (or
    until ``should_exit`` is set, in any other thread)."""
    loop, http = http_stack()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=loop,
        http=http,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        backlog=BACKLOG,
    )
    return uvicorn.Server(config)
