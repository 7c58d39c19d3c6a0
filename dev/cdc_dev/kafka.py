"""Apache Kafka 4.1.1 (KRaft, single node) and Kafka Connect with the Debezium MariaDB connector.

Both run from the jars ``kafka/pom.xml`` puts into ``kafka/target/lib`` (built with Maven on first use;
Maven's cache is ``~/.m2``) and the Debezium plugin unpacked into ``kafka/target/plugins``.

Layout (``<state>`` = ``Stack.state_dir``)::

    <state>/kafka/server.properties       kafka/server.properties + port/state overrides
    <state>/kafka/cluster.id              KRaft cluster id (storage formatted once with it)
    <state>/kafka/data/                   log.dirs
    <state>/connect/connect-distributed.properties   kafka/connect-distributed.properties + overrides
    <state>/logs/{kafka,connect}.log      JVM output
    <state>/run/{kafka,connect}.pid

Connect keeps its connector configs, source offsets and status in Kafka topics
(``cdc-claims-connect-*``), so stopping and starting the worker resumes from the stored binlog
position without a new snapshot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from cdc_dev.base import (
    REPO_ROOT,
    Stack,
    StackError,
    http_ok,
    port_open,
    process_status,
    read_pid,
    start_process,
    step,
    stop_process,
    tail,
    wait_until,
)
from cdc_dev.mariadb import MariaDB

KAFKA_DIR = REPO_ROOT / "kafka"
POM = KAFKA_DIR / "pom.xml"
LIB_DIR = KAFKA_DIR / "target" / "lib"
PLUGIN_DIR = KAFKA_DIR / "target" / "plugins"
LOG4J = KAFKA_DIR / "log4j2.properties"
SERVER_PROPERTIES = KAFKA_DIR / "server.properties"
CONNECT_PROPERTIES = KAFKA_DIR / "connect-distributed.properties"
CONNECTOR_FILE = KAFKA_DIR / "connectors" / "openmrs-mariadb.json"

KAFKA_VERSION = "4.1.1"
DEBEZIUM_VERSION = "3.5.0.Final"
BROKER_MAIN = "kafka.Kafka"  # kafka_2.13 (core)
STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"  # still in kafka_2.13 in 4.1.1
CONNECT_MAIN = "org.apache.kafka.connect.cli.ConnectDistributed"
MARIADB_CONNECTOR_CLASS = "io.debezium.connector.mariadb.MariaDbConnector"


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    candidate = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not candidate or not Path(candidate).exists():
        raise StackError("java not found (Java 17+ needed): apt-get install -y openjdk-17-jre-headless")
    return candidate


def classpath() -> str:
    return f"{LIB_DIR}/*"


def built() -> bool:
    return (
        (LIB_DIR / f"kafka_2.13-{KAFKA_VERSION}.jar").exists()
        and (LIB_DIR / f"connect-runtime-{KAFKA_VERSION}.jar").exists()
        and (PLUGIN_DIR / "debezium-connector-mariadb" / f"debezium-connector-mariadb-{DEBEZIUM_VERSION}.jar").exists()
    )


def ensure_built() -> None:
    """``mvn -B -q -f kafka/pom.xml package`` unless ``kafka/target`` already has the right jars."""
    if built():
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven not found (needed once to fetch Kafka and Debezium): apt-get install -y maven")
    done = step(f"fetching Kafka {KAFKA_VERSION} and Debezium {DEBEZIUM_VERSION} with Maven ({POM})")
    result = subprocess.run([mvn, "-B", "-q", "-f", str(POM), "package"], capture_output=True, text=True, check=False)
    if result.returncode != 0 or not built():
        raise StackError(
            f"mvn package failed (rc {result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
        )
    done()


def _jvm(heap: str, name: str) -> list[str]:
    return [
        java(),
        f"-Xms{heap}" if name == "kafka" else "-Xms128m",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J}",
        "-cp",
        classpath(),
    ]


def _write_properties(template: Path, target: Path, overrides: dict[str, str]) -> None:
    """Copy a ``.properties`` file, replacing (or appending) the given keys."""
    lines: list[str] = []
    seen: set[str] = set()
    for line in template.read_text().splitlines():
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else None
        if key is not None and key in overrides:
            lines.append(f"{key}={overrides[key]}")
            seen.add(key)
        else:
            lines.append(line)
    lines += [f"{key}={value}" for key, value in overrides.items() if key not in seen]
    target.write_text("\n".join(lines) + "\n")


class KafkaBroker:
    """Single-node Kafka (broker + KRaft controller in one JVM) on ``127.0.0.1:<Ports.kafka>``."""

    name = "kafka"

    def __init__(self, stack: Stack | None = None, heap: str = "512m") -> None:
        self.stack = stack or Stack.from_env()
        self.heap = heap
        self.port = self.stack.ports.kafka
        self.controller_port = self.stack.ports.kafka_controller
        self.home = self.stack.dir("kafka")
        self.data = self.home / "data"
        self.properties = self.home / "server.properties"
        self.pidfile = self.stack.pidfile(self.name)
        self.logfile = self.stack.log(self.name)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def status(self) -> str:
        return process_status(
            self.pidfile,
            healthy=lambda: port_open(self.port),
            port=self.port,
            running=f"{self.bootstrap}, data {self.data}",
            log=self.logfile,
        )

    def up(self) -> None:
        if read_pid(self.pidfile) is not None and self.ready():
            return
        for port in (self.port, self.controller_port):
            if port_open(port):
                raise StackError(f"port {port} is in use by a process we did not start")
        ensure_built()
        self._write_config()
        self._format()
        done = step(f"starting Kafka {KAFKA_VERSION} broker on {self.bootstrap}")
        start_process(
            [*_jvm(self.heap, self.name), BROKER_MAIN, str(self.properties)],
            pidfile=self.pidfile,
            log=self.logfile,
        )
        wait_until(lambda: read_pid(self.pidfile) is None or self.ready(), 120, "the Kafka broker", self.logfile)
        if read_pid(self.pidfile) is None:
            raise StackError(f"the Kafka broker exited during start-up:\n{tail(self.logfile)}")
        done()

    def down(self) -> None:
        if stop_process(self.pidfile, timeout=60):
            print(f"==> Kafka broker stopped (data kept: {self.data})", flush=True)

    def reset(self) -> None:
        """Nothing to do: tests isolate themselves by reading from the end offsets they saw first."""

    def ready(self) -> bool:
        """The broker answers a metadata request (the port opens before the broker is usable)."""
        if not port_open(self.port):
            return False
        from kafka.admin import KafkaAdminClient

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000, client_id="devstack")
        except Exception:  # kafka-python raises a zoo of errors while the broker boots
            return False
        try:
            admin.list_topics()
            return True
        except Exception:
            return False
        finally:
            admin.close()

    def _write_config(self) -> None:
        _write_properties(
            SERVER_PROPERTIES,
            self.properties,
            {
                "log.dirs": str(self.data),
                "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
                "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            },
        )

    def _format(self) -> None:
        if (self.data / "meta.properties").exists():
            return
        id_file = self.home / "cluster.id"
        if not id_file.exists():
            id_file.write_text(_kraft_cluster_id() + "\n")
        done = step(f"formatting KRaft storage {self.data}")
        result = subprocess.run(
            [
                *_jvm("256m", "storage"),
                STORAGE_TOOL_MAIN,
                "format",
                "-t",
                id_file.read_text().strip(),
                "-c",
                str(self.properties),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"kafka StorageTool format failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        done()


def _kraft_cluster_id() -> str:
    """What ``StorageTool random-uuid`` prints: a random UUID, base64url without padding (22 chars)."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class KafkaConnect:
    """Kafka Connect (distributed mode, one worker) with the ``openmrs-mariadb`` Debezium connector.

    ``up`` starts the worker if needed, (re)registers the connector with ``PUT
    /connectors/openmrs-mariadb/config`` and waits until the connector and its task are RUNNING and
    the initial snapshot is over (the stored offset no longer says ``snapshot``).
    """

    name = "connect"
    connector = "openmrs-mariadb"

    def __init__(self, stack: Stack | None = None, mariadb: MariaDB | None = None, heap: str = "512m") -> None:
        self.stack = stack or Stack.from_env()
        self.mariadb = mariadb or MariaDB(self.stack)
        self.heap = heap
        self.port = self.stack.ports.connect
        self.home = self.stack.dir("connect")
        self.properties = self.home / "connect-distributed.properties"
        self.pidfile = self.stack.pidfile(self.name)
        self.logfile = self.stack.log(self.name)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> str:
        pid = read_pid(self.pidfile)
        if pid is None:
            return f"port {self.port} is taken by a process we did not start" if port_open(self.port) else "stopped"
        if not http_ok(self.url + "/health"):
            return f"worker starting or unhealthy (pid {pid}); see {self.logfile}"
        try:
            state = self.connector_status()
        except StackError:
            return f"running (pid {pid}, {self.url}); {self.connector}: not registered"
        tasks = ",".join(str(t.get("state")) for t in state.get("tasks", []))
        return f"running (pid {pid}, {self.url}); {self.connector}: {state['connector']['state']} tasks [{tasks}]"

    def up(self) -> None:
        self.start_worker()
        self.register()
        self.wait_running()
        self.wait_snapshot_done()

    def down(self) -> None:
        """Stop the worker (SIGTERM: it commits source offsets on a clean shutdown)."""
        if stop_process(self.pidfile, timeout=60):
            print("==> Kafka Connect stopped", flush=True)

    def reset(self) -> None:
        """Nothing to do: the connector keeps streaming; tests read from the offsets they saw first."""

    # -- worker ------------------------------------------------------------------------------------

    def start_worker(self) -> None:
        if read_pid(self.pidfile) is not None and http_ok(self.url + "/health"):
            return
        if read_pid(self.pidfile) is None and port_open(self.port):
            raise StackError(f"port {self.port} is in use by a process we did not start")
        ensure_built()
        bootstrap = f"127.0.0.1:{self.stack.ports.kafka}"
        _write_properties(
            CONNECT_PROPERTIES,
            self.properties,
            {
                "bootstrap.servers": bootstrap,
                "listeners": self.url,
                "rest.advertised.host.name": "127.0.0.1",
                "rest.advertised.port": str(self.port),
                "plugin.path": str(PLUGIN_DIR.resolve()),
            },
        )
        done = step(f"starting Kafka Connect on {self.url} (plugins {PLUGIN_DIR})")
        if read_pid(self.pidfile) is None:
            start_process(
                [*_jvm(self.heap, self.name), CONNECT_MAIN, str(self.properties)],
                pidfile=self.pidfile,
                log=self.logfile,
            )
        wait_until(
            # /health (KIP-1017) answers 200 once the worker has joined its group and can serve requests
            lambda: read_pid(self.pidfile) is None or http_ok(self.url + "/health"),
            180,
            "the Kafka Connect worker to report healthy",
            self.logfile,
        )
        if read_pid(self.pidfile) is None:
            raise StackError(f"Kafka Connect exited during start-up:\n{tail(self.logfile)}")
        plugins = self._request("GET", "/connector-plugins")
        if not any(p.get("class") == MARIADB_CONNECTOR_CLASS for p in plugins):
            raise StackError(f"{MARIADB_CONNECTOR_CLASS} not found on plugin.path {PLUGIN_DIR}; see {self.logfile}")
        done()

    # -- connector ---------------------------------------------------------------------------------

    def connector_config(self) -> dict[str, str]:
        """``kafka/connectors/openmrs-mariadb.json`` with this stack's ports and credentials filled in."""
        body = json.loads(CONNECTOR_FILE.read_text())
        config: dict[str, str] = {str(k): str(v) for k, v in body["config"].items()}
        config.update(
            {
                "database.hostname": "127.0.0.1",
                "database.port": str(self.stack.ports.mariadb),
                "database.user": "debezium",
                "database.password": self.mariadb.passwords()["debezium"],
                "schema.history.internal.kafka.bootstrap.servers": f"127.0.0.1:{self.stack.ports.kafka}",
            }
        )
        return config

    def register(self) -> None:
        """Create or update the connector (PUT is idempotent: an unchanged config is a no-op)."""
        self._request("PUT", f"/connectors/{self.connector}/config", self.connector_config())

    def connector_status(self) -> dict[str, Any]:
        status: dict[str, Any] = self._request("GET", f"/connectors/{self.connector}/status")
        return status

    def wait_running(self, timeout: float = 120.0) -> None:
        """Wait until the connector and all its tasks are RUNNING; FAILED raises with Connect's trace."""
        done = step(f"waiting for connector {self.connector} to be RUNNING")
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.connector_status()
            except StackError:
                time.sleep(0.5)
                continue
            failed = [last["connector"], *last.get("tasks", [])]
            for item in failed:
                if item.get("state") == "FAILED":
                    trace = item.get("trace", "(no trace)")
                    raise StackError(f"connector {self.connector} FAILED on {item.get('worker_id')}:\n{trace}")
            tasks = last.get("tasks", [])
            if (
                last["connector"].get("state") == "RUNNING"
                and tasks
                and all(t.get("state") == "RUNNING" for t in tasks)
            ):
                done()
                return
            time.sleep(0.5)
        raise StackError(f"connector {self.connector} not RUNNING after {timeout:.0f}s: {last}; see {self.logfile}")

    def offsets(self) -> list[dict[str, Any]]:
        """The connector's committed source offsets (``GET /connectors/<name>/offsets``)."""
        body: dict[str, Any] = self._request("GET", f"/connectors/{self.connector}/offsets")
        offsets: list[dict[str, Any]] = body.get("offsets", [])
        return offsets

    def wait_snapshot_done(self, timeout: float = 300.0) -> None:
        """Wait until a committed offset exists and no longer marks a snapshot in progress.

        Offsets are committed every ``offset.flush.interval.ms`` (1 s), so this returns about a second
        after the snapshot's last record.
        """

        def streaming() -> bool:
            try:
                offsets = self.offsets()
            except StackError:
                return False
            if not offsets:
                return False
            # during the snapshot the offset carries "snapshot": "INITIAL" (or true); streaming offsets do not
            return all(o.get("offset", {}).get("snapshot") in (None, False, "false") for o in offsets)

        done = step(f"waiting for connector {self.connector} to finish its snapshot and stream")
        wait_until(streaming, timeout, "the initial snapshot to complete", self.logfile)
        done()

    def _request(self, method: str, path: str, body: object | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - loopback URL
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - loopback URL
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise StackError(f"Connect {method} {path} -> HTTP {exc.code}: {detail}") from exc
        except OSError as exc:
            raise StackError(f"Connect {method} {path} failed: {exc}") from exc
        return json.loads(raw) if raw else None


def components(stack: Stack | None = None) -> list[MariaDB | KafkaBroker | KafkaConnect]:
    """The capture half of the stack, in start order (stop in reverse)."""
    stack = stack or Stack.from_env()
    mariadb = MariaDB(stack)
    return [mariadb, KafkaBroker(stack), KafkaConnect(stack, mariadb)]


def up(stack: Stack | None = None) -> None:
    for component in components(stack):
        component.up()


def down(stack: Stack | None = None) -> None:
    for component in reversed(components(stack)):
        component.down()
