"""The kafka-python shutdown records we silence (a read on a socket we closed), and only those."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
from kafka.net.transport import KafkaTCPTransport

from cdc_claims import log


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def transport_records() -> Iterator[_Collect]:
    log.configure("INFO", json=True)
    handler = _Collect()
    logger = logging.getLogger("kafka.net.transport")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


class _BrokenSocket:
    def getpeername(self) -> tuple[str, int]:
        return ("127.0.0.1", 9092)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 40000)

    def recv(self, _size: int) -> bytes:
        raise OSError("connection reset by peer")


def test_a_receive_on_a_transport_closed_under_it_logs_nothing(transport_records: _Collect) -> None:
    # the real race: close() has set _sock to None and _closed; the read task still calls recv
    transport = KafkaTCPTransport(net=None, sock=None)
    transport._closed = True
    _, err = transport._sock_recv()
    assert err is not None, "kafka-python still reports the error to its caller"
    assert [r for r in transport_records.records if r.exc_info] == []


def test_a_receive_error_on_a_live_transport_is_still_logged(transport_records: _Collect) -> None:
    transport = KafkaTCPTransport(net=None, sock=_BrokenSocket())
    _, err = transport._sock_recv()
    assert err is not None
    logged = [r for r in transport_records.records if r.exc_info]
    assert len(logged) == 1 and "Error receiving network data" in logged[0].getMessage()


def test_configure_twice_adds_the_filter_once() -> None:
    log.configure("INFO", json=True)
    log.configure("INFO", json=True)
    filters = logging.getLogger("kafka.net.transport").filters
    assert sum(isinstance(f, log.ClosedTransportNoise) for f in filters) == 1


def _task_failure(error: BaseException) -> logging.LogRecord:
    try:
        raise error
    except BaseException:
        return logging.LogRecord(
            "kafka.net.selector", logging.ERROR, __file__, 1, "Unhandled exception in task %s:", ("t",), sys.exc_info()
        )


def test_a_read_task_waiting_on_a_closed_socket_logs_nothing_other_task_failures_do() -> None:
    log.configure("INFO", json=True)
    selector = logging.getLogger("kafka.net.selector")
    handler = _Collect()
    selector.addHandler(handler)
    try:
        closed = _task_failure(ValueError("Invalid file descriptor: -1"))  # the shutdown race
        other = _task_failure(ValueError("Invalid file descriptor: 7"))
        crash = _task_failure(RuntimeError("boom"))
        for record in (closed, other, crash):
            selector.handle(record)
    finally:
        selector.removeHandler(handler)
    assert handler.records == [other, crash]
