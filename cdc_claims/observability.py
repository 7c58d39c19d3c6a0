"""The probe and scrape endpoint every role serves (``CDC_CLAIMS_METRICS_PORT``, default 9464).

=============  =====================================================================
``/metrics``   Prometheus exposition of the default registry (:mod:`cdc_claims.metrics`)
``/healthz``   200 ``ok`` while the process runs (liveness: restart only if this fails)
``/readyz``    200 ``ready`` if ``ready()`` is true, else 503 with a short reason
=============  =====================================================================

``ready`` is asked on every ``/readyz`` request; it should be cheap (look at state the role
already keeps, such as "Kafka assignment received, last DB ping fine"), never block for long.
If it raises, the answer is 503 and the reason is the error's ``reason`` (for a
:class:`~cdc_claims.errors.CdcClaimsError`) or its class name: never its message, which could
carry a host name or worse.

``/metrics`` is prometheus_client's own WSGI app, so format negotiation (text or OpenMetrics)
and gzip are not ours to keep right; a small router in front adds the probes (the library's
``start_wsgi_server`` builds its own app and cannot take them). ``wsgiref`` serves the router
from one daemon thread, without a log line per request; :meth:`MetricsServer.close` stops it::

    with serve(settings.metrics_port, ready=role.ready):
        role.run()
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

from cdc_claims.errors import CdcClaimsError
from cdc_claims.log import get_logger

log = get_logger(__name__)

#: True when ready; False or a short reason of our own ("openhim auth", "no assignment") when not
Readiness = Callable[[], bool | str]

_TEXT = "text/plain; charset=utf-8"

#: Bind address: probes and scrapes come from outside the pod, so every interface.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - the container's network namespace is the boundary


def readiness_reason(ready: Readiness) -> str | None:
    """``None`` when ready, else a short reason fit for a probe answer. Pure apart from ``ready``."""
    try:
        ok = ready()
    except CdcClaimsError as err:
        return err.reason
    except Exception as err:  # a readiness check must never take the server down
        return type(err).__name__
    if isinstance(ok, str):
        return ok
    return None if ok else "not ready"


def probe_app(ready: Readiness, registry: CollectorRegistry = REGISTRY) -> WSGIApplication:
    """The WSGI application: ``/metrics`` is prometheus_client's own app, the two probes are ours."""
    metrics_app: WSGIApplication = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")  # without the query string
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path not in ("/healthz", "/readyz"):
            status, body = "404 Not Found", b"not found\n"
        elif environ.get("REQUEST_METHOD") != "GET":
            status, body = "405 Method Not Allowed", b"use GET\n"
        elif path == "/healthz":
            status, body = "200 OK", b"ok\n"
        elif (reason := readiness_reason(ready)) is None:
            status, body = "200 OK", b"ready\n"
        else:
            status, body = "503 Service Unavailable", f"not ready: {reason}\n".encode()
        start_response(
            status, [("Content-Type", _TEXT), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
        )
        return [body]

    return app


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per request: the kubelet probes every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow scrape never delays a probe; threads die with the process."""

    daemon_threads = True


class MetricsServer:
    """Handle on a running probe/metrics server: ``port`` is the bound port, ``close()`` stops it."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="cdc-claims-metrics", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def serve(
    port: int, ready: Readiness, *, host: str = ALL_INTERFACES, registry: CollectorRegistry = REGISTRY
) -> MetricsServer:
    """Start serving ``/metrics``, ``/healthz`` and ``/readyz`` in a background thread.

    ``port=0`` binds a free port (see :attr:`MetricsServer.port`). Raises :class:`OSError` if the
    port is taken: a role must not run without its probes.
    """
    server = make_server(host, port, probe_app(ready, registry), _Server, _QuietHandler)
    handle = MetricsServer(server)
    log.info("metrics_serving", host=host, port=handle.port)
    return handle
