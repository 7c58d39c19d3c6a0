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
carry a host name or worse. The server runs in one daemon thread; :meth:`MetricsServer.close`
stops it::

    with serve(settings.metrics_port, ready=role.ready):
        role.run()
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

from cdc_claims.errors import CdcClaimsError
from cdc_claims.log import get_logger

log = get_logger(__name__)

#: True when ready; False or a short reason of our own ("openhim auth", "no assignment") when not
Readiness = Callable[[], bool | str]

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


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(HTTPStatus.OK, encoder(self.server.registry), content_type)
        elif path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n")
        elif path == "/readyz":
            reason = readiness_reason(self.server.ready)
            if reason is None:
                self._send(HTTPStatus.OK, b"ready\n")
            else:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, f"not ready: {reason}\n".encode())
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("probe_request", request=format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], ready: Readiness, registry: CollectorRegistry) -> None:
        super().__init__(address, _Handler)
        self.ready = ready
        self.registry = registry


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
    server = _Server((host, port), ready, registry)
    handle = MetricsServer(server)
    log.info("metrics_serving", host=host, port=handle.port)
    return handle
