"""structlog set-up: JSON lines in production, readable lines on a terminal.

Only uuids, claim codes and reasons are ever logged: no patient names, no insurance numbers.
"""

from __future__ import annotations

import logging
import sys

import structlog

#: kafka-python 3.0's network thread may wake to read a socket the main thread has just closed
#: (``KafkaConsumer.close()`` on shutdown) and then logs the resulting error with a full
#: traceback although nothing failed (upstream: dpkp/kafka-python#3095, #3097). It surfaces two
#: ways: the transport's receive error (an AttributeError on the socket set to None), or, when
#: the read task registers the closed socket (fd -1) with the selector first, the IO loop's
#: "Unhandled exception in task" with a ValueError.
_TRANSPORT_LOGGER = "kafka.net.transport"
_SELECTOR_LOGGER = "kafka.net.selector"
_RECEIVE_ERROR = "Error receiving network data"
_TASK_ERROR = "Unhandled exception in task"
_CLOSED_FD = "Invalid file descriptor: -1"


class ClosedTransportNoise(logging.Filter):
    """Drop kafka-python's record of a read on a socket that was already closed by us.

    Why: an operator who sees a traceback on every clean shutdown stops reading tracebacks. Only
    these records are dropped: the receive error of a transport that reports itself closing, and
    a task that failed waiting on file descriptor -1 (a socket object closes to -1, so it can only
    be one we closed); a receive error on a live connection, or any other task failure, still
    reaches the log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _TASK_ERROR in str(record.msg):
            error = record.exc_info[1] if record.exc_info else None
            return not (isinstance(error, ValueError) and _CLOSED_FD in str(error))
        if _RECEIVE_ERROR not in str(record.msg) or not isinstance(record.args, tuple) or not record.args:
            return True
        is_closing = getattr(record.args[0], "is_closing", None)
        return not (callable(is_closing) and is_closing())


def configure(level: str = "INFO", json: bool | None = None) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(message)s")
    # kafka-python narrates every connection and rebalance at INFO; httpx logs each request URL.
    for noisy in ("kafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
    for name in (_TRANSPORT_LOGGER, _SELECTOR_LOGGER):
        kafka_log = logging.getLogger(name)
        if not any(isinstance(f, ClosedTransportNoise) for f in kafka_log.filters):
            kafka_log.addFilter(ClosedTransportNoise())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
