"""How the sidecar checks the servers it calls (openHIM, openIMIS's API): one rule for both.

A ``ca_bundle`` is *added* to the system CAs (certifi's, as httpx uses by default), never put in
their place: a private CA for one server must not make every public certificate untrusted, for
instance when openIMIS moves behind a proxy with a public certificate. A bundle that cannot be
read stops the sidecar at start, naming the setting, rather than failing each request later.
``verify_tls=False`` switches verification off, and says so in the log each time a client is made.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

import httpx

from cdc_claims.errors import ConfigError
from cdc_claims.log import get_logger

log = get_logger(__name__)


def server_verification(verify_tls: bool, ca_bundle: Path | None, section: str) -> ssl.SSLContext | Literal[False]:
    """httpx's ``verify`` for the server of settings ``section`` (``openhim``, ``payer``): the
    system CAs plus ``ca_bundle``, or False when ``verify_tls`` is off."""
    if not verify_tls:
        log.warning("tls_verification_disabled", setting=f"{section}.verify_tls")
        return False
    context = httpx.create_ssl_context()
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=str(ca_bundle))
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"cannot load {section}.ca_bundle {ca_bundle}: {err}") from err
    return context
