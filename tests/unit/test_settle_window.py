"""cdc_claims.settle.window: debouncing encounters and visits, with lossless hand-over."""

from __future__ import annotations

from debezium_fixtures import (
    CommittedTx,
    FakeConnector,
    bahmni_save,
    close_visit,
    diagnosis_revision,
    void_encounter,
)

from cdc_claims.capture import RowChange, Touches, touched_by
from cdc_claims.settings import SettleSettings
from cdc_claims.settle import Due, SettleTracker, Unit

ENC = SettleSettings(mode="encounter", settle_seconds=10)
VISIT = SettleSettings(mode="visit", settle_seconds=10)


def _touches(tx: CommittedTx) -> Touches:
    rows = [record.parse() for record in tx.rows]
    return touched_by(row for row in rows if isinstance(row, RowChange))


def _units(due: list[Due]) -> list[Unit]:
    return [d.unit for d in due]


# -- encounter mode -----------------------------------------------------------------------


def test_three_saves_within_the_window_give_one_due_unit() -> None:
    conn = FakeConnector()
    tracker = SettleTracker(ENC)
    saves = [
        bahmni_save(conn, encounter_id=5),
        bahmni_save(conn, encounter_id=5, first_obs_id=62, drug_order_id=13, lab_order_id=14, new_encounter=False),
        bahmni_save(conn, encounter_id=5, first_obs_id=68, drug_order_id=15, lab_order_id=16, new_encounter=False),
    ]
    for t, save in zip((0.0, 4.0, 8.0), saves, strict=True):
        assert tracker.record(_touches(save), t, tag=save.gtid) == {Unit.encounter(5)}
        assert tracker.due(t) == []

    assert tracker.due(17.9) == []  # quiet period runs from the last Save
    [due] = tracker.due(18.0)
    assert due.unit == Unit.encounter(5) and due.reason == "quiet" and not due.voided
    assert (due.first_touched, due.last_touched) == (0.0, 8.0)
    assert due.encounter_ids == {5}
    assert tracker.due(100.0) == []  # handed out once
    assert tracker.done(due.unit, due.token) == {s.gtid for s in saves}
    assert tracker.pending_count == 0


def test_zero_settle_seconds_is_due_at_once() -> None:
    tracker = SettleTracker(SettleSettings(settle_seconds=0))
    tracker.touch_encounter(5, 3.0, tag="tx")
    assert _units(tracker.due(3.0)) == [Unit.encounter(5)]


def test_touch_while_in_flight_comes_back_due() -> None:
    tracker = SettleTracker(ENC)
    tracker.touch_encounter(5, 0.0, tag="tx1")
    [first] = tracker.due(10.0)
    tracker.touch_encounter(5, 12.0, tag="tx2")  # lands while the claim is being built
    assert tracker.due(30.0) == []  # not handed out twice concurrently

    assert tracker.done(first.unit, first.token) == {"tx1"}  # tx2 is not covered by that build
    assert tracker.holds("tx2") and not tracker.holds("tx1")
    [second] = tracker.due(22.0)
    assert second.unit == Unit.encounter(5) and second.token > first.token
    assert tracker.done(second.unit, second.token) == {"tx2"}
    assert tracker.pending_count == 0


def test_stale_token_is_a_no_op() -> None:
    tracker = SettleTracker(ENC)
    tracker.touch_encounter(5, 0.0, tag="tx1")
    [due] = tracker.due(10.0)
    assert tracker.done(due.unit, due.token + 1) == frozenset()
    assert tracker.done(Unit.encounter(6), 1) == frozenset()
    assert tracker.retry(due.unit, due.token + 1, 10.0, 5.0) is False
    assert tracker.done(due.unit, due.token) == {"tx1"}


def test_transaction_touching_two_encounters_is_released_after_both() -> None:
    conn = FakeConnector()
    revision = diagnosis_revision(conn, old_encounter=5, new_encounter=12)
    tracker = SettleTracker(ENC)
    assert tracker.record(_touches(revision), 0.0, tag=revision.gtid) == {Unit.encounter(5), Unit.encounter(12)}
    first, second = tracker.due(10.0)
    assert tracker.done(first.unit, first.token) == frozenset()
    assert tracker.holds(revision.gtid)
    assert tracker.done(second.unit, second.token) == {revision.gtid}


def test_encounter_mode_ignores_visit_only_changes() -> None:
    tracker = SettleTracker(ENC)
    tx = close_visit(FakeConnector(), visit_id=3)
    assert tracker.record(_touches(tx), 0.0, tag=tx.gtid) == frozenset()
    assert not tracker.holds(tx.gtid)  # the caller marks its offsets done at once
    assert tracker.due(100.0) == []


def test_voided_encounter_is_surfaced() -> None:
    conn = FakeConnector()
    tracker = SettleTracker(ENC)
    save = bahmni_save(conn, encounter_id=5)
    tracker.record(_touches(save), 0.0, tag=save.gtid)
    voiding = void_encounter(conn, encounter_id=5)
    tracker.record(_touches(voiding), 2.0, tag=voiding.gtid)
    [due] = tracker.due(12.0)
    assert due.voided and due.reason == "voided"


def test_void_flag_is_cleared_by_the_build_that_covered_it() -> None:
    tracker = SettleTracker(ENC)
    tracker.touch_encounter(5, 0.0, voided=True)
    [due] = tracker.due(10.0)
    tracker.touch_encounter(5, 11.0)  # e.g. an unvoid
    tracker.done(due.unit, due.token)
    [again] = tracker.due(21.0)
    assert not again.voided and again.reason == "quiet"


def test_retry_hands_the_unit_out_again_after_the_delay() -> None:
    tracker = SettleTracker(ENC)
    tracker.touch_encounter(5, 0.0, tag="tx1")
    [due] = tracker.due(10.0)
    assert tracker.retry(due.unit, due.token, 10.0, 30.0)
    assert tracker.due(39.0) == []
    [again] = tracker.due(40.0)
    assert tracker.done(again.unit, again.token) == {"tx1"}


def test_due_units_come_oldest_first() -> None:
    tracker = SettleTracker(ENC)
    tracker.touch_encounter(7, 5.0)
    tracker.touch_encounter(6, 1.0)
    tracker.touch_encounter(8, 3.0)
    assert _units(tracker.due(20.0)) == [Unit.encounter(6), Unit.encounter(8), Unit.encounter(7)]
    assert tracker.in_flight_count == 3


# -- visit mode ---------------------------------------------------------------------------


def test_visit_mode_waits_for_close_then_quiet() -> None:
    conn = FakeConnector()
    tracker = SettleTracker(VISIT)
    save = bahmni_save(conn, encounter_id=5, visit_id=3)
    assert tracker.record(_touches(save), 0.0, tag=save.gtid) == {Unit.visit(3)}
    assert tracker.due(10_000.0) == []  # open visit, idle claiming off

    closing = close_visit(conn, visit_id=3)
    tracker.record(_touches(closing), 10_000.0, tag=closing.gtid)
    assert tracker.due(10_009.0) == []
    [due] = tracker.due(10_010.0)
    assert due.unit == Unit.visit(3) and due.reason == "closed"
    assert due.encounter_ids == {5}
    assert tracker.done(due.unit, due.token) == {save.gtid, closing.gtid}


def test_visit_mode_idle_claiming() -> None:
    tracker = SettleTracker(SettleSettings(mode="visit", settle_seconds=10, visit_idle_seconds=3600))
    tracker.touch_encounter(5, 0.0, visit_id=3)
    assert tracker.due(3599.0) == []
    [due] = tracker.due(3600.0)
    assert due.reason == "idle" and due.unit == Unit.visit(3)


def test_visit_mode_unknown_visit_needs_a_lookup() -> None:
    conn = FakeConnector()
    tracker = SettleTracker(VISIT)
    later = bahmni_save(conn, encounter_id=5, visit_id=3, new_encounter=False)  # no encounter row
    touches = _touches(later)
    assert tracker.record(touches, 0.0, tag=later.gtid) == {Unit.visit(3)}  # via visit_attribute only
    assert tracker.needs_visit_lookup() == [5]
    assert tracker.holds(later.gtid)

    assert tracker.resolve(5, 3, visit_closed=True) == Unit.visit(3)
    assert tracker.needs_visit_lookup() == []
    [due] = tracker.due(10.0)  # closed per the lookup, quiet since the change at t=0
    assert due.reason == "closed" and due.encounter_ids == {5}
    assert tracker.done(due.unit, due.token) == {later.gtid}
    assert tracker.resolve(5, 3) is None  # nothing awaiting any more


def test_visit_mode_remembers_what_it_learned() -> None:
    conn = FakeConnector()
    tracker = SettleTracker(VISIT)
    first = bahmni_save(conn, encounter_id=5, visit_id=3)
    tracker.record(_touches(first), 0.0, tag=first.gtid)  # the encounter row says visit 3
    assert tracker.touch_encounter(5, 1.0, tag="later") == Unit.visit(3)
    assert tracker.needs_visit_lookup() == []


def test_visit_mode_lookup_miss_falls_back_to_the_encounter() -> None:
    tracker = SettleTracker(VISIT)
    assert tracker.touch_encounter(9, 0.0, tag="tx", voided=True) is None
    assert tracker.resolve(9, None) == Unit.encounter(9)
    [due] = tracker.due(10.0)
    assert due.unit == Unit.encounter(9) and due.voided
    assert tracker.done(due.unit, due.token) == {"tx"}


def test_visit_mode_voided_encounter_and_voided_visit() -> None:
    conn = FakeConnector()
    tracker = SettleTracker(VISIT)
    voiding = void_encounter(conn, encounter_id=5, visit_id=3)
    tracker.record(_touches(voiding), 0.0, tag=voiding.gtid)
    assert tracker.due(100.0) == []  # the visit is still open: nothing to claim yet
    tracker.touch_visit(3, 100.0, voided=True)
    [due] = tracker.due(110.0)
    assert due.reason == "voided" and due.voided and due.voided_encounters == {5}


def test_visit_mode_late_edit_to_a_closed_visit() -> None:
    tracker = SettleTracker(VISIT)
    tracker.touch_visit(3, 0.0, closed=True, tag="close")
    [due] = tracker.due(10.0)
    tracker.done(due.unit, due.token)
    tracker.touch_encounter(5, 500.0, visit_id=3, tag="late")
    [late] = tracker.due(510.0)
    assert late.reason == "closed" and late.encounter_ids == {5}


def test_visit_mode_reopened_visit_is_not_due() -> None:
    tracker = SettleTracker(VISIT)
    tracker.touch_visit(3, 0.0, closed=True)
    tracker.touch_visit(3, 1.0, closed=False)
    assert tracker.due(1000.0) == []


def test_encounter_moved_into_an_in_flight_visit_comes_back_due() -> None:
    tracker = SettleTracker(VISIT)
    tracker.touch_visit(3, 0.0, closed=True, tag="close")
    [due] = tracker.due(10.0)
    tracker.touch_encounter(5, 11.0, tag="save")
    tracker.resolve(5, 3)
    assert tracker.done(due.unit, due.token) == {"close"}
    [again] = tracker.due(21.0)
    assert again.encounter_ids == {5}
    assert tracker.done(again.unit, again.token) == {"save"}
