"""Keep the payer's data fresh without putting openIMIS on each claim's path.

* :class:`CatalogueCache` reads the catalogue once at start and again every ``refresh_seconds`` on a
  daemon thread; a failed read keeps the last good copy (and says so), so the pricelist check
  costs a dictionary look-up per line and a slow openIMIS never slows a claim.
* :class:`PolicyCache` asks openIMIS for an insuree's policies at most once per ``ttl`` (several
  encounters of one patient in a day cost one look-up); a look-up that fails is not cached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from cdc_claims import metrics
from cdc_claims.errors import CdcClaimsError
from cdc_claims.log import get_logger
from cdc_claims.lru import Lru
from cdc_claims.payer.catalogue import Catalogue, Policy

log = get_logger(__name__)


class CatalogueCache:
    """The ``CatalogueSource`` port: the latest catalogue ``read`` returned."""

    def __init__(self, read: Callable[[], Catalogue], refresh_seconds: float) -> None:
        self._read = read
        self._every = refresh_seconds
        self._current: Catalogue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def current(self) -> Catalogue | None:
        catalogue = self._current
        if catalogue is not None:
            metrics.PAYER_CATALOGUE_AGE.set(max(0.0, time.time() - catalogue.read_at))
        return catalogue

    def refresh(self) -> bool:
        """Read once now; False (and the last copy kept) when openIMIS could not be read."""
        try:
            catalogue = self._read()
        except (CdcClaimsError, ValueError, KeyError, TypeError) as err:
            log.warning("payer_catalogue_unreadable", error=str(err)[:300], kept=self._current is not None)
            return False
        self._current = catalogue
        log.info(
            "payer_catalogue_read",
            facilities=len(catalogue.facilities),
            medical=len(catalogue.medical),
            icd_codes=len(catalogue.icd_codes),
        )
        return True

    def start(self) -> None:
        """Read now, then every ``refresh_seconds`` (sooner, every 30 s, while no read succeeded)."""
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="payer-catalogue", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._every if self._current is not None else min(30.0, self._every)):
            self.refresh()

    def close(self) -> None:
        self._stop.set()


class PolicyCache:
    """The ``PolicySource`` port: ``lookup`` behind a bounded, time-limited memory."""

    def __init__(
        self,
        lookup: Callable[[str], Sequence[Policy]],
        ttl: float,
        *,
        limit: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._memory: Lru[str, tuple[float, tuple[Policy, ...]]] = Lru(limit)

    def policies(self, insurance_number: str) -> Sequence[Policy]:
        now = self._clock()
        with self._lock:
            held = self._memory.get(insurance_number)
        if held is not None and now - held[0] < self._ttl:
            return held[1]
        found = tuple(self._lookup(insurance_number))  # errors propagate: the unit is retried
        with self._lock:
            self._memory.put(insurance_number, (now, found))
        return found
