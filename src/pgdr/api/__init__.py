"""The HTTP service: the runbook's ``/api/health`` and ``/api/monitoring/metrics``, Prometheus
``/metrics``, incidents, and a small dashboard page.

``/api/health`` is public (it reveals only healthy/unhealthy and latency, as load balancers need);
everything that reveals internals requires ``Authorization: Bearer <token>``.
"""

from pgdr.api.app import create_app
from pgdr.api.server import http_server, http_stack
from pgdr.api.token import load_api_token

__all__ = ["create_app", "http_server", "http_stack", "load_api_token"]
