"""What-if for ``bench/e2e_latency.py --whatif-no-tls`` (never used in production).

Put on the sidecar processes' PYTHONPATH, it makes every PyMySQL connection default to
``ssl_disabled=True``, i.e. skips the ``ssl.create_default_context()`` that PyMySQL >= 1.2 builds
on every connect (PREFERRED mode), to measure what that costs the sidecar per claim.
"""

from __future__ import annotations

from typing import Any

import pymysql.connections

_original_init = pymysql.connections.Connection.__init__


def _init_without_tls(self: Any, *args: Any, **kwargs: Any) -> None:
    kwargs.setdefault("ssl_disabled", True)
    _original_init(self, *args, **kwargs)


pymysql.connections.Connection.__init__ = _init_without_tls  # type: ignore[method-assign]
