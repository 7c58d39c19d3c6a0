"""The backfill's orchestration with fakes: what it skips, what it counts, what it prints and audits."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from cdc_claims import backfill
from cdc_claims.assemble.reader import Candidate
from cdc_claims.backfill import Backfill, LineProgress, Range, Summary
from cdc_claims.errors import ClaimRefused, ConfigError, LeaseHeld, SourceUnavailable, TransientSubmitError
from cdc_claims.lifecycle import State
from cdc_claims.pipeline.claim_service import Outcome, UnitResult
from cdc_claims.pipeline.ports import UnitRef
from cdc_claims.settings import Settings, UnitKind

T0 = datetime(2025, 3, 1, 8, 0)
RANGE = Range("encounter", T0, T0 + timedelta(days=30))


def uuid(i: int) -> str:
    return f"00000000-0000-0000-0000-{i:012d}"


@dataclass
class Reader:
    candidates: list[Candidate]
    pages_asked: list[int | None] = field(default_factory=list)
    facilities_asked: list[tuple[str, ...]] = field(default_factory=list)

    def backfill_candidates(
        self,
        kind: UnitKind,
        *,
        since: datetime,
        until: datetime,
        facilities: Sequence[str] = (),
        after: Candidate | None = None,
        limit: int = 500,
    ) -> list[Candidate]:
        self.pages_asked.append(after.id if after else None)
        self.facilities_asked.append(tuple(facilities))
        start = 0 if after is None else next(i for i, c in enumerate(self.candidates) if c.id == after.id) + 1
        return [c for c in self.candidates[start : start + limit] if since <= c.at < until]

    def backfill_count(
        self, kind: UnitKind, *, since: datetime, until: datetime, facilities: Sequence[str] = ()
    ) -> int:
        return sum(since <= c.at < until for c in self.candidates)


@dataclass
class Ledger:
    known_uuids: set[str] = field(default_factory=set)
    known_asked: list[int] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)

    def known(self, unit_kind: UnitKind, unit_uuids: Sequence[str], *, unless: Iterable[State] = ()) -> set[str]:
        self.known_asked.append(len(unit_uuids))
        assert set(unless) == {State.DETECTED, State.SUBMITTING}  # what decided nothing is run again
        return self.known_uuids & set(unit_uuids)

    def record_action(self, *, actor: str, action: str, target: str, ok: bool, message: str) -> None:
        self.actions.append({"actor": actor, "action": action, "target": target, "ok": ok, "message": message})

    def __getattr__(self, name: str) -> Any:  # the rest of the ledger: a backfill must not touch it
        raise AssertionError(f"backfill used ledger.{name}")


@dataclass
class Processor:
    answers: dict[int, list[UnitResult | Exception]] = field(default_factory=dict)
    processed: list[int] = field(default_factory=list)

    def process(self, unit: UnitRef, *, resubmit: bool = False, force: bool = False) -> UnitResult:
        self.processed.append(unit.id)
        queue = self.answers.get(unit.id)
        answer: UnitResult | Exception = queue.pop(0) if queue else UnitResult(unit, "submitted", f"C-{unit.id}")
        if isinstance(answer, Exception):
            raise answer
        return answer


@dataclass
class Wiring:
    reader_: Reader
    ledger_: Ledger = field(default_factory=Ledger)
    processor_: Processor = field(default_factory=Processor)
    processor_built: bool = False
    closed: bool = False

    def ledger(self) -> Ledger:
        return self.ledger_

    def processor(self) -> Processor:
        self.processor_built = True
        return self.processor_

    def reader(self) -> Reader:
        return self.reader_

    def close(self) -> None:
        self.closed = True


class Quiet:
    def __init__(self) -> None:
        self.updates = 0

    def update(self, summary: Summary) -> None:
        self.updates += 1

    def close(self) -> None:
        pass


def units(n: int) -> list[Candidate]:
    return [Candidate(i, uuid(i), T0 + timedelta(minutes=i)) for i in range(1, n + 1)]


def result(unit_id: int, outcome: Outcome, reason: str | None = None) -> UnitResult:
    return UnitResult(UnitRef("encounter", unit_id), outcome, f"C-{unit_id}", reason)


def job(w: backfill.BackfillWiring, page_size: int = 500, sleeps: list[float] | None = None) -> Backfill:
    slept = sleeps if sleeps is not None else []
    return Backfill(w, page_size=page_size, sleep=slept.append, progress=lambda _total: Quiet())


def command(w: Wiring, *, dry_run: bool = False) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = backfill.run(
        Settings(), RANGE, dry_run=dry_run, by="amina", out=lines.append, wiring=w, backfill=lambda x: job(x, 2)
    )
    return code, lines


def test_units_the_ledger_knows_are_skipped_and_the_rest_go_through_the_claim_service_in_pages() -> None:
    w = Wiring(Reader(units(5)), Ledger({uuid(2), uuid(4)}))
    summary = job(w, page_size=2).run(RANGE)
    assert w.processor_.processed == [1, 3, 5]
    assert w.reader_.pages_asked == [None, 2, 4]  # keyset: each page after the last one
    assert w.ledger_.known_asked == [2, 2, 1]  # the ledger is asked a page at a time
    assert (summary.total, summary.claimed, summary.skipped, summary.done) == (5, 3, 2, 5)
    assert summary.ok


def test_every_outcome_is_counted_where_it_belongs() -> None:
    w = Wiring(Reader(units(7)))
    w.processor_.answers = {
        1: [result(1, "held", "uninsured")],
        2: [result(2, "held", "uninsured")],
        3: [result(3, "held", "unmapped_line")],
        4: [result(4, "nothing_to_claim", "no_billable_lines")],
        5: [result(5, "unchanged")],  # the live stream claimed it after our look-up
        6: [result(6, "replayed")],
    }
    summary = job(w).run(RANGE)
    assert summary.held == {"uninsured": 2, "unmapped_line": 1}
    assert (summary.claimed, summary.nothing_to_claim, summary.skipped) == (2, 1, 1)
    assert summary.ok  # held units wait in the ledger, visibly: not the backfill's failure
    assert summary.line() == (
        "2 claimed, 3 held (uninsured 2, unmapped_line 1), 1 nothing to claim, 1 skipped (already known), "
        "0 failed, 0 not now"
    )


def test_a_cause_time_fixes_is_not_now_and_the_run_goes_on_and_fails() -> None:
    w = Wiring(Reader(units(4)))
    w.processor_.answers = {
        1: [TransientSubmitError("openIMIS 503")],
        2: [SourceUnavailable("db down")],
        3: [ClaimRefused("openIMIS refused it")],
    }
    summary = job(w).run(RANGE)
    assert w.processor_.processed == [1, 2, 3, 4]
    assert summary.not_now == {"transient": 1, "source_unavailable": 1}
    assert summary.failed == {"refused": 1}
    assert summary.claimed == 1
    assert not summary.ok


def test_a_unit_the_live_stream_is_sending_is_waited_for_then_found_claimed() -> None:
    w = Wiring(Reader(units(1)))
    w.processor_.answers = {1: [LeaseHeld("busy"), LeaseHeld("busy"), result(1, "unchanged")]}
    sleeps: list[float] = []
    summary = job(w, sleeps=sleeps).run(RANGE)
    assert sleeps == [0.5, 1.0]
    assert (summary.skipped, summary.claimed, summary.ok) == (1, 0, True)


def test_a_lease_held_for_too_long_is_not_now() -> None:
    w = Wiring(Reader(units(1)))
    w.processor_.answers = {1: [LeaseHeld("busy")] * 10}
    summary = job(w).run(RANGE)
    assert summary.not_now == {"lease_held": 1}
    assert len(w.processor_.processed) == 1 + len(backfill.LEASE_WAITS)


def test_a_bug_on_one_unit_is_counted_and_a_configuration_error_stops_the_run() -> None:
    w = Wiring(Reader(units(2)))
    w.processor_.answers = {1: [RuntimeError("bug")]}
    summary = job(w).run(RANGE)
    assert (summary.failed, summary.claimed) == ({"internal_error": 1}, 1)
    w = Wiring(Reader(units(2)))
    w.processor_.answers = {1: [ConfigError("no mapping")]}
    with pytest.raises(ConfigError):
        job(w).run(RANGE)


def test_the_command_prints_and_audits_one_backfill_row_and_exits_by_the_summary() -> None:
    w = Wiring(Reader(units(3)), Ledger({uuid(1)}))
    code, lines = command(w)
    assert code == 0 and w.closed
    assert "3 unit(s)" in lines[-1] and "2 claimed" in lines[-1] and "1 skipped (already known)" in lines[-1]
    [row] = w.ledger_.actions
    assert (row["actor"], row["action"], row["ok"]) == ("amina", "backfill", True)
    assert row["target"] == "encounters 2025-03-01 08:00:00 .. 2025-03-31 08:00:00"
    assert row["message"] == lines[-1]

    w = Wiring(Reader(units(2)))
    w.processor_.answers = {2: [TransientSubmitError("openIMIS 503")]}
    code, lines = command(w)
    assert code == 1 and "1 not now (transient 1)" in lines[-1]
    assert w.ledger_.actions[0]["ok"] is False


def test_a_dry_run_lists_what_would_be_claimed_and_touches_nothing() -> None:
    w = Wiring(Reader(units(25)), Ledger({uuid(3)}))
    code, lines = command(w, dry_run=True)
    assert code == 0
    assert (
        lines[0] == "dry run: encounters 2025-03-01 08:00:00 .. 2025-03-31 08:00:00: "
        "25 unit(s), 1 already known, 24 would be claimed"
    )
    assert lines[1:21] == [f"  {uuid(i)}" for i in [1, 2, *range(4, 22)]]
    assert lines[21] == "  ... and 4 more"
    assert not w.processor_built and w.processor_.processed == []
    assert w.ledger_.actions == []  # no audit either: a dry run leaves no trace


def test_the_range_and_facilities_reach_the_reader() -> None:
    w = Wiring(Reader(units(3)))
    what = Range("encounter", T0 + timedelta(minutes=2), T0 + timedelta(minutes=3), ("Rapta Hospital",))
    summary = job(w).run(what)
    assert w.processor_.processed == [2]  # [since, until)
    assert summary.total == 1
    assert set(w.reader_.facilities_asked) == {("Rapta Hospital",)}
    assert str(what).endswith(" at Rapta Hospital")
    assert str(Range("visit", T0, backfill.NO_END)) == "visits 2025-03-01 08:00:00 .. "


def test_without_a_terminal_progress_is_a_line_every_n_units_or_every_few_seconds() -> None:
    out = io.StringIO()
    now = [0.0]
    progress = LineProgress(out, 300, every=100, seconds=10.0, clock=lambda: now[0])
    summary = Summary(total=300)
    for _ in range(150):
        summary.claimed += 1
        now[0] += 0.01
        progress.update(summary)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("backfill: 100/300 (")
    assert "ETA" in lines[0] and "100 claimed" in lines[0]
    now[0] += 11.0  # a slow payer: a line after 10 s even without 100 more units
    summary.claimed += 1
    progress.update(summary)
    assert out.getvalue().splitlines()[-1].startswith("backfill: 151/300 (")


def test_progress_is_a_bar_only_at_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(backfill.progress_for(io.StringIO(), 10), LineProgress)
    bar = backfill.progress_for(Tty(), 10)
    assert isinstance(bar, backfill.BarProgress)
    bar.update(Summary(total=10, claimed=3))
    bar.close()


def test_dates_are_parsed_as_the_database_stores_them() -> None:
    assert backfill.parse_time("2025-01-31") == datetime(2025, 1, 31)
    assert backfill.parse_time("2025-01-31T08:30") == datetime(2025, 1, 31, 8, 30)
    for bad in ("yesterday", "2025-01-31T08:00+02:00"):
        with pytest.raises(ValueError):
            backfill.parse_time(bad)
