"""Shared plumbing of the local stack: one state directory, pid files, ports, waits.

Every component (MariaDB, Kafka, Connect, openIMIS, the openHIM emulator) keeps its data in
``<state>/<name>/``, its log in ``<state>/logs/<name>.log`` and its pid in
``<state>/run/<name>.pid``. ``down`` stops only processes whose pid file we wrote.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

REPO_ROOT = Path(__file__).resolve().parents[2]


class StackError(RuntimeError):
    """A stack component failed to install or start; the message says why and where to look."""


@dataclass(frozen=True)
class Ports:
    mariadb: int = int(os.environ.get("CDC_STACK_MARIADB_PORT", "33306"))
    kafka: int = int(os.environ.get("CDC_STACK_KAFKA_PORT", "19092"))
    kafka_controller: int = int(os.environ.get("CDC_STACK_KAFKA_CONTROLLER_PORT", "19093"))
    connect: int = int(os.environ.get("CDC_STACK_CONNECT_PORT", "18083"))
    openimis: int = int(os.environ.get("CDC_STACK_OPENIMIS_PORT", "18000"))
    openimis_pg: int = int(os.environ.get("CDC_STACK_OPENIMIS_PG_PORT", "55432"))
    openhim_http: int = int(os.environ.get("CDC_STACK_OPENHIM_HTTP_PORT", "15001"))
    openhim_https: int = int(os.environ.get("CDC_STACK_OPENHIM_HTTPS_PORT", "15000"))
    #: the emulator's own admin API (recorded transactions, a test token issuer): not openHIM's
    openhim_admin: int = int(os.environ.get("CDC_STACK_OPENHIM_ADMIN_PORT", "15080"))
    #: the billing desk (``cdc-claims run desk``) and the dev OpenID provider it signs in with
    desk: int = int(os.environ.get("CDC_STACK_DESK_PORT", "18080"))
    oidc: int = int(os.environ.get("CDC_STACK_OIDC_PORT", "15090"))


@dataclass(frozen=True)
class Stack:
    """Where the stack lives and which ports it uses."""

    state_dir: Path
    ports: Ports

    @classmethod
    def from_env(cls) -> Stack:
        state = Path(os.environ.get("CDC_STACK_DIR", REPO_ROOT / ".stack")).resolve()
        return cls(state_dir=state, ports=Ports())

    def dir(self, name: str) -> Path:
        path = self.state_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log(self, name: str) -> Path:
        return self.dir("logs") / f"{name}.log"

    def pidfile(self, name: str) -> Path:
        return self.dir("run") / f"{name}.pid"


class Component(Protocol):
    name: str

    def up(self) -> None: ...
    def down(self) -> None: ...
    def status(self) -> str: ...
    def reset(self) -> None: ...


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise StackError(f"timed out after {timeout:.0f}s waiting for {what}" + (f"; see {log}" if log else ""))


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URLs only
            return 200 <= int(resp.status) < 300
    except OSError:
        return False


def read_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def start_process(
    cmd: Sequence[str],
    *,
    pidfile: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``cmd`` detached (own session, output to ``log``) and record its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    pidfile.write_text(str(proc.pid))
    return proc.pid


def stop_process(pidfile: Path, timeout: float = 30.0) -> bool:
    """TERM the process group we started, KILL it after ``timeout``. True if something ran."""
    pid = read_pid(pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and read_pid(pidfile) is not None:
        _reap(pid)
        time.sleep(0.2)
    if read_pid(pidfile) is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def process_status(pidfile: Path, *, healthy: Callable[[], bool], port: int, running: str, log: Path) -> str:
    """The ``status()`` line of a component that is one process we started on one port."""
    pid = read_pid(pidfile)
    if pid is not None and healthy():
        return f"running (pid {pid}, {running})"
    if pid is not None:
        return f"starting or unhealthy (pid {pid}); see {log}"
    if port_open(port):
        return f"port {port} is taken by a process we did not start"
    return "stopped"


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def step(message: str) -> Callable[[], None]:
    """Print ``message`` now and its duration when the returned callable is called."""
    started = time.monotonic()
    print(f"==> {message} ...", flush=True)

    def done() -> None:
        print(f"    {message}: done in {time.monotonic() - started:.1f}s", flush=True)

    return done
