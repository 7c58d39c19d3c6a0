"""The claims desk on the local stack: ``cdc-claims run desk`` plus the dev OpenID provider.

The desk runs as a stack component (not as one of a test sidecar's roles) so that it outlives
the demo: a new user opens the printed URL after ``cdc-dev demo`` returns. It signs staff in
either with the local user ``clerk`` (the users file written here, the password generated once
per stack: ``python -m cdc_dev.credentials --desk`` prints it) or through the dev OpenID
provider, as a hospital's Keycloak would. Its actions (re-run, resubmit, refresh, withdrawal
handled) go through the same claim service as the CLI, with the stack's credentials.
"""

from __future__ import annotations

import sys

from cdc_claims.desk.auth import user_line
from cdc_dev import credentials
from cdc_dev.base import (
    REPO_ROOT,
    Stack,
    StackError,
    http_ok,
    process_status,
    start_process,
    stop_process,
    tail,
    wait_until,
)

#: the metrics port of the stack's desk (the test sidecars use 19464-19599)
METRICS_PORT_OFFSET = 1


class Desk:
    """The stack's desk (a :class:`~cdc_dev.base.Component`)."""

    name = "desk"

    def __init__(self, stack: Stack | None = None) -> None:
        self.stack = stack or Stack.from_env()
        self.port = self.stack.ports.desk
        self.oidc_port = self.stack.ports.oidc
        self.pidfile = self.stack.pidfile(self.name)
        self.oidc_pidfile = self.stack.pidfile("oidc")
        self.logfile = self.stack.log(self.name)
        self.oidc_log = self.stack.log("oidc")

    def env(self) -> dict[str, str]:
        return {
            **credentials.sidecar_env(self.stack.ports),
            **credentials.desk_env(self.stack),
            "CDC_CLAIMS_MAPPING_FILE": str(REPO_ROOT / "examples" / "mapping.yaml"),
            "CDC_CLAIMS_METRICS_PORT": str(self.port + METRICS_PORT_OFFSET),
            "CDC_CLAIMS_KAFKA__GROUP_ID": "cdc-claims-desk",
            "CDC_CLAIMS_LOG_LEVEL": "INFO",
        }

    def write_users(self) -> None:
        creds = credentials.desk(self.stack)
        creds.users_file.parent.mkdir(parents=True, exist_ok=True)
        creds.users_file.write_text(user_line(creds.user, creds.password) + "\n")
        creds.users_file.chmod(0o600)

    def healthy(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.port}/healthz")

    def oidc_healthy(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.oidc_port}/.well-known/openid-configuration")

    def up(self) -> None:
        if not self.oidc_healthy():
            start_process(
                [sys.executable, "-m", "cdc_dev.oidc_provider", "--port", str(self.oidc_port)],
                pidfile=self.oidc_pidfile,
                log=self.oidc_log,
            )
            try:
                wait_until(self.oidc_healthy, 30, "the dev OpenID provider", self.oidc_log)
            except StackError as err:
                raise StackError(f"{err}\n{tail(self.oidc_log)}") from err
        if self.healthy():
            return
        self.write_users()
        start_process(
            [sys.executable, "-m", "cdc_claims", "run", "desk"],
            pidfile=self.pidfile,
            log=self.logfile,
            env=self.env(),
        )
        try:
            wait_until(self.healthy, 60, "the claims desk", self.logfile)
        except StackError as err:
            raise StackError(f"{err}\n{tail(self.logfile)}") from err

    def down(self) -> None:
        stop_process(self.pidfile)
        stop_process(self.oidc_pidfile)

    def status(self) -> str:
        creds = credentials.desk(self.stack)
        return process_status(
            self.pidfile,
            healthy=self.healthy,
            port=self.port,
            running=f"{creds.base_url}/ (user {creds.user}; password: python -m cdc_dev.credentials --desk)",
            log=self.logfile,
        )

    def reset(self) -> None:
        """Nothing of its own to reset: it reads the database the other components reset."""
