"""The real openIMIS backend of the local stack (``tests/stack/openimis-sandbox``).

A thin wrapper: the sandbox script owns its processes (PostgreSQL 15 cluster + gunicorn), its
lock and its pid files under ``<state>/openimis``; this component only passes it the state dir,
the ports of :class:`~cdc_dev.base.Ports` and the dump in ``tests/data/openimis``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cdc_dev.base import REPO_ROOT, Stack, StackError, port_open, tail

SANDBOX = REPO_ROOT / "tests" / "stack" / "openimis-sandbox" / "openimis-sandbox"
DUMP = REPO_ROOT / "tests" / "data" / "openimis" / "imis-demo-pg15.sql.gz"
#: the openIMIS superuser of the demo database (all rights); the openHIM route uses it
USER = "Admin"
PASSWORD = "admin123"  # noqa: S105 - well-known demo credential


class OpenImis:
    """openIMIS FHIR R4 API on ``127.0.0.1:<Ports.openimis>`` (PostgreSQL on ``Ports.openimis_pg``)."""

    name = "openimis"

    def __init__(self, stack: Stack | None = None) -> None:
        self.stack = stack or Stack.from_env()
        self.home = self.stack.dir(self.name)

    @property
    def port(self) -> int:
        return self.stack.ports.openimis

    @property
    def base_url(self) -> str:
        """The FHIR R4 base URL, with its trailing slash."""
        return f"http://127.0.0.1:{self.port}/api/api_fhir_r4/"

    def env(self) -> dict[str, str]:
        return {
            "OPENIMIS_HOME": str(self.home),
            "OPENIMIS_HTTP_PORT": str(self.port),
            "OPENIMIS_PG_PORT": str(self.stack.ports.openimis_pg),
            "OPENIMIS_DUMP": str(DUMP),
        }

    def run(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``openimis-sandbox ARGS`` with this stack's knobs; its output is returned."""
        # the caller's PYTHONPATH / virtualenv must not leak into the server (the script unsets
        # PYTHONPATH itself; VIRTUAL_ENV only confuses pip's messages)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV",)}
        env.update(self.env())
        proc = subprocess.run(
            ["bash", str(SANDBOX), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise StackError(
                f"openimis-sandbox {' '.join(args)} failed (exit {proc.returncode}):\n"
                f"{proc.stderr.strip()[-3000:]}\n{tail(self.home / 'logs' / 'gunicorn.log', 15)}\n"
                f"logs: {self.home / 'logs'}"
            )
        return proc

    def install(self) -> None:
        self.run("install")

    def up(self) -> None:
        """Install if needed, start PostgreSQL and gunicorn, wait until a FHIR login works."""
        self.run("start")

    def down(self) -> None:
        self.run("stop", timeout=120)

    def status(self) -> str:
        proc = self.run("status", check=False, timeout=60)
        state = "running" if proc.returncode == 0 else "stopped"
        return f"{state} {self.base_url}" if state == "running" else f"{state} ({self.home})"

    def is_up(self) -> bool:
        return port_open(self.port) and self.run("status", check=False, timeout=60).returncode == 0

    def reset(self, *, from_dump: bool = False) -> None:
        """Back to the pristine demo database (and fresh gunicorn workers with empty caches)."""
        self.run("reset", *(["--from-dump"] if from_dump else []))

    def process_claim(self, *claims: str) -> str:
        """Move checked claims (UUIDs or codes) to processed/valuated, as a reviewer would.

        Returns the sandbox's report (one line per claim); raises StackError if a claim is
        unknown, rejected, or did not reach status 8/16.
        """
        if not claims:
            raise ValueError("process_claim needs at least one claim uuid or code")
        return self.run("process", *claims, timeout=120).stdout

    def smoke(self) -> str:
        return self.run("smoke", timeout=120).stdout

    def psql(self, sql: str) -> str:
        return self.run("psql", "-Atc", sql, timeout=60).stdout

    def destroy(self) -> None:
        self.run("destroy", timeout=120)


def process_claim(uuid_or_code: str, *more: str, stack: Stack | None = None) -> str:
    """Module-level helper for tests: ``process_claim(claim_uuid)``."""
    return OpenImis(stack).process_claim(uuid_or_code, *more)


def sandbox_command(args: Sequence[str], stack: Stack | None = None) -> list[str]:
    """The shell command an operator would type (for docs and error messages)."""
    component = OpenImis(stack)
    env = " ".join(f"{k}={v}" for k, v in component.env().items())
    return [f"{env} {SANDBOX} {' '.join(args)}"]


def logs_dir(stack: Stack | None = None) -> Path:
    return OpenImis(stack).home / "logs"
