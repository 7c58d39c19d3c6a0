"""The probe and scrape endpoint: real HTTP against a server on a free loopback port."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cdc_claims import metrics
from cdc_claims.errors import SourceUnavailable
from cdc_claims.observability import MetricsServer, readiness_reason, serve


class Switch:
    """A readiness check the test flips."""

    def __init__(self) -> None:
        self.ok = True
        self.error: Exception | None = None

    def __call__(self) -> bool:
        if self.error is not None:
            raise self.error
        return self.ok


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def switch() -> Switch:
    return Switch()


@pytest.fixture
def server(switch: Switch) -> Iterator[MetricsServer]:
    handle = serve(free_port(), ready=switch, host="127.0.0.1")
    yield handle
    handle.close()


@pytest.fixture
def client(server: MetricsServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as http:
        yield http


def sample_value(text: str, name: str, labels: dict[str, str]) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def test_metrics_exposes_cdc_claims_counters(client: httpx.Client) -> None:
    before = sample_value(client.get("/metrics").text, "cdc_claims_dead_letters_total", {"reason": "obs_test"})
    metrics.DEAD_LETTERS.labels(reason="obs_test").inc()
    metrics.DEAD_LETTERS.labels(reason="obs_test").inc()

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = sample_value(response.text, "cdc_claims_dead_letters_total", {"reason": "obs_test"})
    assert after == (before or 0.0) + 2
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert "cdc_claims_submit_duration_seconds" in names
    assert "cdc_claims_pending_units" in names


def test_metrics_speaks_openmetrics_when_asked(client: httpx.Client) -> None:
    metrics.TRANSACTIONS.inc()
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert "cdc_claims_transactions_completed_total" in response.text
    assert response.text.endswith("# EOF\n")


def test_healthz_answers_even_when_not_ready(client: httpx.Client, switch: Switch) -> None:
    switch.ok = False
    response = client.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")


def test_readyz_follows_the_check(client: httpx.Client, switch: Switch) -> None:
    ready = client.get("/readyz")
    assert (ready.status_code, ready.text) == (200, "ready\n")

    switch.ok = False
    not_ready = client.get("/readyz")
    assert (not_ready.status_code, not_ready.text) == (503, "not ready: not ready\n")

    switch.ok = True
    assert client.get("/readyz").status_code == 200


def test_readyz_reports_the_error_reason_not_its_message(client: httpx.Client, switch: Switch) -> None:
    switch.error = SourceUnavailable("db.internal:3306 refused the password of cdc_reader")
    response = client.get("/readyz")
    assert (response.status_code, response.text) == (503, "not ready: source_unavailable\n")

    switch.error = RuntimeError("secret detail")
    response = client.get("/readyz")
    assert (response.status_code, response.text) == (503, "not ready: RuntimeError\n")


def test_unknown_path_is_404(client: httpx.Client) -> None:
    assert client.get("/nope").status_code == 404


def test_query_string_is_ignored(client: httpx.Client) -> None:
    assert client.get("/healthz?probe=kubelet").text == "ok\n"


def test_close_releases_the_port(switch: Switch) -> None:
    port = free_port()
    handle = serve(port, ready=switch, host="127.0.0.1")
    assert handle.port == port
    handle.close()
    handle.close()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    # the port is free again: a restarted role can bind it
    with serve(port, ready=switch, host="127.0.0.1") as again:
        assert httpx.get(f"http://127.0.0.1:{again.port}/healthz", timeout=5).status_code == 200


def test_port_zero_binds_a_free_port(switch: Switch) -> None:
    with serve(0, ready=switch, host="127.0.0.1") as handle:
        assert handle.port > 0
        assert httpx.get(f"http://127.0.0.1:{handle.port}/healthz", timeout=5).status_code == 200


def test_port_in_use_is_an_error(switch: Switch, server: MetricsServer) -> None:
    with pytest.raises(OSError):
        serve(server.port, ready=switch, host="127.0.0.1")


def test_readiness_reason_is_pure() -> None:
    assert readiness_reason(lambda: True) is None
    assert readiness_reason(lambda: False) == "not ready"


def test_requests_leave_nothing_on_stderr(
    client: httpx.Client, switch: Switch, capfd: pytest.CaptureFixture[str]
) -> None:
    switch.ok = False
    for path in ("/healthz", "/readyz", "/metrics", "/nope"):
        client.get(path)
    assert capfd.readouterr().err == ""


def test_probes_answer_get_only(client: httpx.Client) -> None:
    assert client.post("/healthz").status_code == 405
    assert client.post("/metrics").status_code == 405  # prometheus_client's own answer
