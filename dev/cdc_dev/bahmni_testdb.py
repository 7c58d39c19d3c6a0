"""Connection factories for the integration tests of the Bahmni simulator, ledger and iclm writer.

Environment (defaults = the local stack's MariaDB, ``cdc-dev up``, loaded with the Bahmni
0.94 demo DB, ``insuranceclaims_iclm_schema.sql`` and the ledger table):

* ``CDC_TEST_MYSQL_HOST`` / ``CDC_TEST_MYSQL_PORT`` / ``CDC_TEST_MYSQL_DB``: 127.0.0.1 / the stack's
  MariaDB port (``CDC_STACK_MARIADB_PORT``, 33306) / openmrs
* ``CDC_TEST_MYSQL_ADMIN_USER`` / ``_PASSWORD``: cdc_admin / cdc_admin: full DML (what Bahmni itself
  uses; the simulator writes through it)
* ``CDC_TEST_MYSQL_WRITER_USER`` / ``_PASSWORD``: cdc_writer / cdc_writer: the sidecar's writer user
  (SELECT on openmrs, INSERT/UPDATE on ``iclm_*``, ALL on ``cdc_claims_ledger``)
"""

from __future__ import annotations

import os

from cdc_claims.db import ConnFactory, connection_factory
from cdc_dev.base import Ports


def _env(name: str, default: str) -> str:
    return os.environ.get(f"CDC_TEST_MYSQL_{name}", default)


def _factory(user_var: str, default_user: str) -> ConnFactory:
    return connection_factory(
        host=_env("HOST", "127.0.0.1"),
        port=int(_env("PORT", str(Ports().mariadb))),
        user=_env(f"{user_var}_USER", default_user),
        password=_env(f"{user_var}_PASSWORD", default_user),
        database=_env("DB", "openmrs"),
    )


def admin_factory() -> ConnFactory:
    """Connections with Bahmni's own rights (used by the simulator and for assertions)."""
    return _factory("ADMIN", "cdc_admin")


def writer_factory() -> ConnFactory:
    """Connections as the sidecar's writer user."""
    return _factory("WRITER", "cdc_writer")
