"""Run the three sidecar roles as real processes against the local stack (demo, e2e tests, bench).

Each role is ``cdc-claims run <role>`` in its own process, configured only through the
environment, exactly as the Helm chart runs it. Before starting, the roles' consumer groups
are pinned to the current end of their topics, so a run sees only the changes made after it
started (the stack is shared by tests, benchmarks and the demo).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata, TopicPartition

from cdc_claims.pipeline.consumer_role import CAPTURED_TABLES
from cdc_dev import credentials
from cdc_dev.base import REPO_ROOT, Stack, StackError, http_ok, wait_until

DEMO_MAPPING = REPO_ROOT / "examples" / "mapping.yaml"
ROLES = ("consumer", "writer", "poller")


def ensure_topics(bootstrap: str, topics: Iterable[str]) -> None:
    """Create missing topics (1 partition): Debezium creates a table's topic only at its first row."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="cdc-claims-devstack")
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(t, num_partitions=1, replication_factor=1) for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
    finally:
        admin.close()


def pin_group_to_end(bootstrap: str, group_id: str, topics: Iterable[str]) -> None:
    """Commit the current end offsets of ``topics`` for ``group_id``."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    try:
        parts = []
        for topic in topics:
            for p in consumer.partitions_for_topic(topic) or {0}:
                parts.append(TopicPartition(topic, p))
        consumer.assign(parts)
        consumer.seek_to_end(*parts)
        offsets = {tp: OffsetAndMetadata(consumer.position(tp), "", -1) for tp in parts}
        consumer.commit(offsets)
    finally:
        consumer.close(autocommit=False)


class Sidecar:
    """The consumer, writer and poller roles as child processes."""

    def __init__(
        self,
        stack: Stack | None = None,
        *,
        settle_seconds: float = 0.0,
        poll_seconds: float = 2.0,
        group: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        roles: Iterable[str] = ROLES,
        metrics_base_port: int = 19464,
    ) -> None:
        self.stack = stack or Stack.from_env()
        self.group = group or f"cdc-claims-{uuid.uuid4().hex[:8]}"
        self.roles = tuple(roles)
        self.metrics_ports = {role: metrics_base_port + i for i, role in enumerate(ROLES)}
        ports = self.stack.ports
        self.kafka = credentials.kafka(ports, group_id=self.group)
        self.env = {
            **credentials.sidecar_env(ports),
            "CDC_CLAIMS_KAFKA__GROUP_ID": self.group,
            "CDC_CLAIMS_MAPPING_FILE": str(DEMO_MAPPING),
            "CDC_CLAIMS_SETTLE__SETTLE_SECONDS": str(settle_seconds),
            "CDC_CLAIMS_POLL_SECONDS": str(poll_seconds),
            "CDC_CLAIMS_LOG_LEVEL": "INFO",
            **(extra_env or {}),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def log(self, role: str) -> Path:
        return self.stack.log(f"sidecar-{self.group}-{role}")

    def prepare(self) -> None:
        """Create the topics and pin this run's consumer groups to their current end."""
        data = [self.kafka.table_topic(t) for t in CAPTURED_TABLES] + [self.kafka.transaction_topic]
        ours = [self.kafka.reply_topic, self.kafka.held_topic, self.kafka.claims_topic, self.kafka.dead_letter_topic]
        ensure_topics(self.kafka.bootstrap_servers, data + ours)
        pin_group_to_end(self.kafka.bootstrap_servers, self.group, data)
        pin_group_to_end(self.kafka.bootstrap_servers, f"{self.group}-writer", [self.kafka.reply_topic])

    def start(self, roles: Iterable[str] | None = None, *, timeout: float = 60.0) -> None:
        if not self.procs:
            self.prepare()
        try:
            for role in roles or self.roles:
                self.start_role(role)
            for role in roles or self.roles:
                wait_until(self._ready_check(role), timeout, f"sidecar {role} ready", self.log(role))
        except BaseException:
            self.stop()  # never leave half a sidecar running
            raise

    def _ready_check(self, role: str) -> Callable[[], bool]:
        port = self.metrics_ports[role]
        return lambda: self._alive(role) and http_ok(f"http://127.0.0.1:{port}/readyz")

    def start_role(self, role: str, extra_env: Mapping[str, str] | None = None) -> None:
        env = {
            **os.environ,
            **self.env,
            "CDC_CLAIMS_METRICS_PORT": str(self.metrics_ports[role]),
            **(extra_env or {}),
        }
        out = open(self.log(role), "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.procs[role] = subprocess.Popen(
            [sys.executable, "-m", "cdc_claims", "run", role], env=env, stdout=out, stderr=subprocess.STDOUT
        )
        out.close()

    def _alive(self, role: str) -> bool:
        proc = self.procs.get(role)
        if proc is None or proc.poll() is not None:
            raise StackError(f"sidecar {role} exited; see {self.log(role)}")
        return True

    def wait_exit(self, role: str, timeout: float = 60.0) -> int:
        """Wait for ``role`` to exit by itself (e.g. at a failpoint); returns its exit code."""
        proc = self.procs.pop(role)
        return proc.wait(timeout=timeout)

    def kill(self, role: str) -> None:
        """SIGKILL: a crash, no clean shutdown, no final offset commit."""
        proc = self.procs.pop(role)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for _role, proc in list(self.procs.items()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()

    def __enter__(self) -> Sidecar:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
