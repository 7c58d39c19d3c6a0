"""``cdc-claims backfill``: claim what the live stream never saw, through the same claim service.

A hospital that deploys the sidecar after months of Bahmni use, or comes back from an outage
longer than Kafka's retention, has encounters (or closed visits, in visit mode) with no claim.
The backfill lists every claimable unit of ``[since, until)`` (optionally at some facilities:
the visit's location, by uuid or name), leaves out those the ledger already knows in any state
(they are the live stream's, or an earlier backfill's, business) and runs the others one by one
through :meth:`ClaimService.process <cdc_claims.pipeline.claim_service.ClaimService.process>`,
the consumer's own path: submit lease, write-ahead ledger, deterministic claim code. So it can
never duplicate what the live stream claims, even running beside it: the loser of a race gets
``LeaseHeld`` (waited out, then the unit answers ``unchanged``).

**A direct read of the database, not a Debezium incremental snapshot.** The direct read goes
through the same claim service and ledger, paces itself at the payer's speed (one claim at a
time, as fast as openIMIS answers), needs no Debezium signal table and no write grant on the
source database, and does not flood the consumer's transaction buffer (whose memory grows with
a backlog). Snapshot rows would arrive as ``op=r`` without transaction markers, which the
consumer's transaction grouping would have to special-case.

**Resumable by construction.** A unit gets a ledger row as soon as the claim service leases it,
so after an interruption the same command starts again where it stopped: everything decided is
"skipped (already known)". Units that could not be processed for a cause time fixes (openIMIS,
the database, Kafka down) are "not now": counted, the exit code is 1, and they stay unknown to
the ledger or in a state that decided nothing (``detected``, ``submitting``: see
:data:`RETRY_STATES`), which the next run takes up again; held and failed units are
``rerun-held``'s.

**Sequential** for this first slice: one unit at a time (a later change adds adaptive
concurrency toward openIMIS). Memory stays flat: candidates are read in pages of
:data:`PAGE_SIZE` by keyset on (time, id) and the ledger is asked about each page at once.

Progress goes to stderr: a tqdm bar at a terminal, otherwise a line every :data:`LINE_EVERY`
units or :data:`LINE_SECONDS` seconds (CI logs stay readable). The summary is printed and
audited as one ``backfill`` row of ``cdc_claims_action`` (``--by``, else the OS user). A dry
run counts and lists what would be claimed and touches nothing (no ledger row, no audit).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TextIO

from cdc_claims.actions import ActionLedger, LiveWiring, Processor, audit
from cdc_claims.assemble.reader import Candidate
from cdc_claims.desk.actions import ActionResult
from cdc_claims.errors import CdcClaimsError, ConfigError, LeaseHeld
from cdc_claims.lifecycle import State
from cdc_claims.log import get_logger
from cdc_claims.pipeline.ports import UnitRef
from cdc_claims.settings import Settings, UnitKind

log = get_logger(__name__)

PAGE_SIZE = 500
LINE_EVERY = 100  # units between two progress lines when stderr is not a terminal
LINE_SECONDS = 10.0  # ... or seconds
DRY_RUN_LIST = 20  # uuids a dry run lists
LEASE_WAITS = (0.5, 1.0, 2.0, 4.0)
NO_END = datetime(
    9999, 12, 31
)  # no --until: up to now and beyond  # another sidecar holds the unit: wait this long, then ask again

_CLAIMED = {"submitted", "replayed"}
#: ledger states that decided nothing yet: a lease taken before an error (``detected``), a POST in
#: doubt (``submitting``). A backfill runs those again (the claim service resolves them safely),
#: so "not now" units are picked up by the next run.
RETRY_STATES = (State.DETECTED, State.SUBMITTING)
#: outcomes of a unit that another sidecar claimed between our ledger look-up and our turn
_ALREADY = {"unchanged", "changed_after_submit", "supplemented", "withdrawal_needed", "unknown_status"}


class Candidates(Protocol):
    """The units of a date range (``assemble.reader.OpenMrsReader``)."""

    def backfill_candidates(
        self,
        kind: UnitKind,
        *,
        since: datetime,
        until: datetime,
        facilities: Sequence[str] = (),
        after: Candidate | None = None,
        limit: int = 500,
    ) -> list[Candidate]: ...

    def backfill_count(
        self, kind: UnitKind, *, since: datetime, until: datetime, facilities: Sequence[str] = ()
    ) -> int: ...


class KnownLedger(ActionLedger, Protocol):
    def known(self, unit_kind: UnitKind, unit_uuids: Sequence[str], *, unless: Iterable[State] = ()) -> set[str]: ...


class BackfillWiring(Protocol):
    """:class:`~cdc_claims.actions.LiveWiring`, or fakes in the unit tests."""

    def ledger(self) -> KnownLedger: ...
    def processor(self) -> Processor: ...
    def reader(self) -> Candidates: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Range:
    """What to backfill: a unit kind, ``[since, until)`` in naive UTC, optionally facilities."""

    kind: UnitKind
    since: datetime
    until: datetime
    facilities: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f" at {', '.join(self.facilities)}" if self.facilities else ""
        until = "" if self.until >= NO_END else f"{self.until:%Y-%m-%d %H:%M:%S}"
        return f"{self.kind}s {self.since:%Y-%m-%d %H:%M:%S} .. {until}{where}"


@dataclass
class Summary:
    total: int = 0  # candidates in the range
    claimed: int = 0
    held: Counter[str] = field(default_factory=Counter)
    nothing_to_claim: int = 0
    cancelled: int = 0
    skipped: int = 0  # the ledger knew them (or another sidecar claimed them meanwhile)
    failed: Counter[str] = field(default_factory=Counter)  # needs a person (ledger: failed)
    not_now: Counter[str] = field(default_factory=Counter)  # a cause time fixes: re-run later
    would_claim: list[str] = field(default_factory=list)  # dry run: the first uuids
    would_claim_count: int = 0

    @property
    def done(self) -> int:
        counted = self.claimed + self.nothing_to_claim + self.cancelled + self.skipped
        return counted + sum(self.held.values()) + sum(self.failed.values()) + sum(self.not_now.values())

    @property
    def ok(self) -> bool:
        """Nothing left for a person or for a later run (held units wait in the ledger, visibly)."""
        return not self.failed and not self.not_now

    def line(self) -> str:
        parts = [f"{self.claimed} claimed"]
        held = sum(self.held.values())
        parts.append(f"{held} held" + (f" ({_reasons(self.held)})" if held else ""))
        parts += [f"{self.nothing_to_claim} nothing to claim", f"{self.skipped} skipped (already known)"]
        if self.cancelled:
            parts.append(f"{self.cancelled} cancelled")
        failed = sum(self.failed.values())
        parts.append(f"{failed} failed" + (f" ({_reasons(self.failed)})" if failed else ""))
        not_now = sum(self.not_now.values())
        parts.append(f"{not_now} not now" + (f" ({_reasons(self.not_now)})" if not_now else ""))
        return ", ".join(parts)


def _reasons(counts: Counter[str]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))


class Progress(Protocol):
    def update(self, summary: Summary) -> None: ...
    def close(self) -> None: ...


class LineProgress:
    """Without a terminal: one line every ``every`` units or ``seconds`` seconds, and at the end."""

    def __init__(
        self,
        out: TextIO,
        total: int,
        *,
        every: int = LINE_EVERY,
        seconds: float = LINE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out, self._total, self._every, self._seconds, self._clock = out, total, every, seconds, clock
        self._start = self._last_at = clock()
        self._last_done = 0

    def update(self, summary: Summary) -> None:
        now = self._clock()
        if summary.done - self._last_done >= self._every or now - self._last_at >= self._seconds:
            self._print(summary, now)

    def close(self) -> None:
        pass

    def _print(self, summary: Summary, now: float) -> None:
        self._last_done, self._last_at = summary.done, now
        elapsed = max(now - self._start, 1e-9)
        rate = summary.done / elapsed
        eta = f", ETA {(self._total - summary.done) / rate:.0f}s" if rate > 0 and summary.done < self._total else ""
        print(
            f"backfill: {summary.done}/{self._total} ({rate:.1f}/s{eta}): {summary.line()}",
            file=self._out,
            flush=True,
        )


class BarProgress:
    """At a terminal: a tqdm bar with the counts."""

    def __init__(self, out: TextIO, total: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, file=out, unit="unit", dynamic_ncols=True)
        self._done = 0

    def update(self, summary: Summary) -> None:
        self._bar.update(summary.done - self._done)
        self._done = summary.done
        held = sum(summary.held.values())
        trouble = sum(summary.failed.values()) + sum(summary.not_now.values())
        self._bar.set_postfix(claimed=summary.claimed, held=held, skipped=summary.skipped, failed=trouble)

    def close(self) -> None:
        self._bar.close()


def progress_for(out: TextIO, total: int) -> Progress:
    return BarProgress(out, total) if out.isatty() else LineProgress(out, total)


class Backfill:
    """Lists, filters and claims the units of a :class:`Range` (see the module docstring)."""

    def __init__(
        self,
        wiring: BackfillWiring,
        *,
        page_size: int = PAGE_SIZE,
        sleep: Callable[[float], None] = time.sleep,
        progress: Callable[[int], Progress] | None = None,
    ) -> None:
        self._wiring = wiring
        self._page_size = page_size
        self._sleep = sleep
        self._progress = progress or (lambda total: progress_for(sys.stderr, total))

    def pages(self, what: Range) -> Iterator[list[Candidate]]:
        """The candidates of ``what``, a page at a time (keyset on time and id: flat memory)."""
        reader = self._wiring.reader()
        after: Candidate | None = None
        while True:
            page = reader.backfill_candidates(
                what.kind,
                since=what.since,
                until=what.until,
                facilities=what.facilities,
                after=after,
                limit=self._page_size,
            )
            if not page:
                return
            after = page[-1]
            yield page
            if len(page) < self._page_size:
                return

    def dry_run(self, what: Range) -> Summary:
        """Count and list what would be claimed; writes nothing."""
        summary = Summary(
            total=self._wiring.reader().backfill_count(
                what.kind, since=what.since, until=what.until, facilities=what.facilities
            )
        )
        ledger = self._wiring.ledger()
        for page in self.pages(what):
            known = ledger.known(what.kind, [c.uuid for c in page], unless=RETRY_STATES)
            for cand in page:
                if cand.uuid in known:
                    summary.skipped += 1
                    continue
                summary.would_claim_count += 1
                if len(summary.would_claim) < DRY_RUN_LIST:
                    summary.would_claim.append(cand.uuid)
        return summary

    def run(self, what: Range) -> Summary:
        reader, ledger = self._wiring.reader(), self._wiring.ledger()
        summary = Summary(
            total=reader.backfill_count(what.kind, since=what.since, until=what.until, facilities=what.facilities)
        )
        progress = self._progress(summary.total)
        try:
            for page in self.pages(what):
                known = ledger.known(what.kind, [c.uuid for c in page], unless=RETRY_STATES)
                for cand in page:
                    if cand.uuid in known:
                        summary.skipped += 1
                    else:
                        self._one(what.kind, cand, summary)
                    progress.update(summary)
        finally:
            progress.close()
        return summary

    def _one(self, kind: UnitKind, cand: Candidate, summary: Summary) -> None:
        processor = self._wiring.processor()
        waits = iter(LEASE_WAITS)
        while True:
            try:
                result = processor.process(UnitRef(kind, cand.id))
                break
            except LeaseHeld as err:  # the live stream is sending it right now: let it finish
                wait = next(waits, None)
                if wait is None:
                    summary.not_now[err.reason] += 1
                    return
                self._sleep(wait)
            except ConfigError:
                raise
            except CdcClaimsError as err:
                # retriable: the unit stays unknown (or in its state) for the next run; a refusal
                # that is not retriable left the unit visible in the ledger: either way, not done
                log.warning("backfill_unit_not_now", unit_uuid=cand.uuid, reason=err.reason, error=str(err)[:200])
                (summary.not_now if err.retriable else summary.failed)[err.reason] += 1
                return
            except Exception as err:  # a bug on one unit must not stop a year's backfill
                log.exception("backfill_unit_error", unit_uuid=cand.uuid, error=str(err)[:200])
                summary.failed["internal_error"] += 1
                return
        if result.outcome in _CLAIMED:
            summary.claimed += 1
        elif result.outcome == "held":
            summary.held[result.reason or "held"] += 1
        elif result.outcome == "failed":
            summary.failed[result.reason or "failed"] += 1
        elif result.outcome == "nothing_to_claim":
            summary.nothing_to_claim += 1
        elif result.outcome == "cancelled":
            summary.cancelled += 1
        else:  # claimed by another sidecar after our ledger look-up
            assert result.outcome in _ALREADY, result.outcome
            summary.skipped += 1


def parse_time(text: str) -> datetime:
    """``2025-01-31`` or ``2025-01-31T08:00[:00]``, as the database stores its times (naive)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as err:
        raise ValueError(f"not a date: {text!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from err
    if value.tzinfo is not None:
        raise ValueError(f"{text!r}: give the time without a zone, as the database stores it")
    return value


def run(
    settings: Settings,
    what: Range,
    *,
    dry_run: bool,
    by: str,
    out: Callable[[str], None],
    wiring: BackfillWiring | None = None,
    backfill: Callable[[BackfillWiring], Backfill] = Backfill,
) -> int:
    """The command: 0 when every unit was claimed, held (visibly), had nothing to claim or was
    skipped; 1 when any failed or could not be processed now (re-run the same command)."""
    live: BackfillWiring = wiring if wiring is not None else LiveWiring(settings, client_id="cdc-claims-backfill")
    try:
        job = backfill(live)
        started = time.monotonic()
        if dry_run:
            summary = job.dry_run(what)
            out(
                f"dry run: {what}: {summary.total} unit(s), {summary.skipped} already known, "
                f"{summary.would_claim_count} would be claimed"
            )
            for uuid in summary.would_claim:
                out(f"  {uuid}")
            if summary.would_claim_count > len(summary.would_claim):
                out(f"  ... and {summary.would_claim_count - len(summary.would_claim)} more")
            return 0
        try:
            summary = job.run(what)
        except ConfigError:
            raise
        except CdcClaimsError as err:  # the listing itself (database, ledger) failed: nothing lost
            result = audit(
                live.ledger(), by, "backfill", str(what), ActionResult(False, f"backfill {what}: not now: {err}")
            )
            out(result.message)
            return 1
        seconds = time.monotonic() - started
        rate = summary.done / seconds if seconds > 0 else 0.0
        text = f"backfill {what}: {summary.total} unit(s) in {seconds:.1f}s ({rate:.1f}/s): {summary.line()}"
        result = audit(live.ledger(), by, "backfill", str(what), ActionResult(summary.ok, text))
        out(result.message)
        return 0 if summary.ok else 1
    finally:
        live.close()
