"""cdc_claims.capture.touched: what a committed transaction touched."""

from __future__ import annotations

import pytest
from debezium_fixtures import (
    CommittedTx,
    FakeConnector,
    bahmni_save,
    close_visit,
    diagnosis_revision,
    drug_order_row,
    encounter_diagnosis_row,
    encounter_row,
    ms,
    obs_row,
    order_row,
    patient_identifier_row,
    person_attribute_row,
    visit_row,
    void_encounter,
)

from cdc_claims.capture import EXTRACTORS, RowChange, Touches, Transaction, TransactionBuffer, touched_by
from cdc_claims.errors import MalformedEvent


def _rows(tx: CommittedTx) -> list[RowChange]:
    rows = [record.parse() for record in tx.rows]
    assert all(isinstance(row, RowChange) for row in rows)
    return rows  # type: ignore[return-value]


def _touches(tx: CommittedTx) -> Touches:
    """Through the real buffer, END first, as the consumer would see it."""
    buffer = TransactionBuffer()
    completed: list[Transaction] = []
    for record in tx.end_first():
        completed.extend(buffer.feed(record.parse(), 0.0).completed)
    [transaction] = completed
    return touched_by(transaction)


def test_first_bahmni_save() -> None:
    touches = _touches(bahmni_save(FakeConnector(), encounter_id=5, visit_id=3))
    assert touches.encounter_ids == {5}
    assert touches.visit_ids == {3}
    assert dict(touches.encounter_visits) == {5: 3}
    assert touches.order_ids_to_resolve == frozenset()  # drug_order's orders row is in the same transaction
    assert touches.encounters_voided == touches.visits_closed == touches.patient_ids == frozenset()
    assert not touches.empty


def test_later_save_leaves_the_encounter_row_untouched_but_still_touches_it() -> None:
    touches = _touches(bahmni_save(FakeConnector(), encounter_id=5, visit_id=3, new_encounter=False))
    assert touches.encounter_ids == {5}
    assert touches.visit_ids == {3}  # through visit_attribute
    assert dict(touches.encounter_visits) == {}  # unknown: obs and orders carry no visit_id


def test_diagnosis_revision_touches_both_encounters() -> None:
    touches = _touches(diagnosis_revision(FakeConnector(), old_encounter=5, new_encounter=12))
    assert touches.encounter_ids == {5, 12}
    assert touches.encounters_voided == frozenset()  # an obs was voided, not the encounter


def test_voided_encounter() -> None:
    touches = _touches(void_encounter(FakeConnector(), encounter_id=5, visit_id=3))
    assert touches.encounter_ids == {5}
    assert touches.encounters_voided == {5}
    assert touches.visit_ids == {3}


def test_already_voided_encounter_edited_again_is_not_voided_again() -> None:
    voided = encounter_row(5, 3, voided=1)
    tx = FakeConnector().transaction().update("encounter", voided, void_reason="typo").commit()
    assert _touches(tx).encounters_voided == frozenset()


def test_deleted_encounter_counts_as_voided() -> None:
    tx = FakeConnector().transaction().delete("encounter", encounter_row(5, 3)).commit()
    touches = _touches(tx)
    assert touches.encounters_voided == {5} and touches.encounter_ids == {5}


def test_visit_close_and_reopen() -> None:
    conn = FakeConnector()
    closed = _touches(close_visit(conn, visit_id=3))
    assert closed.visits_closed == {3} and closed.visit_ids == {3}

    stopped = visit_row(3, stopped="2024-05-06 17:00:00")
    reopened = _touches(conn.transaction().update("visit", stopped, date_stopped=None).commit())
    assert reopened.visits_reopened == {3} and reopened.visits_closed == frozenset()

    edited = _touches(conn.transaction().update("visit", stopped, date_changed=ms("2024-05-07 08:00:00")).commit())
    assert edited.visits_closed == frozenset() and edited.visit_ids == {3}


def test_retrospective_visit_created_closed() -> None:
    tx = FakeConnector().transaction().insert("visit", visit_row(7, stopped="2024-05-01 12:00:00")).commit()
    assert _touches(tx).visits_closed == {7}


def test_visit_close_with_iso_datetimes() -> None:
    tx = FakeConnector().transaction().update("visit", visit_row(3), date_stopped="2024-05-06T17:00:00Z").commit()
    assert _touches(tx).visits_closed == {3}


def test_voided_visit() -> None:
    tx = FakeConnector().transaction().update("visit", visit_row(3), voided=1).commit()
    touches = _touches(tx)
    assert touches.visits_voided == {3} and touches.visits_closed == frozenset()


def test_moved_rows_touch_both_sides() -> None:
    conn = FakeConnector()
    tx = (
        conn.transaction()
        .update("obs", obs_row(56, 5, 15), encounter_id=6)
        .update("encounter", encounter_row(8, 3), visit_id=4)
        .commit()
    )
    touches = _touches(tx)
    assert touches.encounter_ids == {5, 6, 8}
    assert touches.visit_ids == {3, 4}
    assert dict(touches.encounter_visits) == {8: 4}  # the after image wins


def test_drug_order_without_its_order_row_needs_resolution() -> None:
    conn = FakeConnector()
    tx = conn.transaction().update("drug_order", drug_order_row(11), quantity=42.0).commit()
    touches = _touches(tx)
    assert touches.order_ids_to_resolve == {11}
    assert touches.encounter_ids == frozenset()
    assert not touches.empty


def test_discontinue_writes_orders_and_drug_order_together() -> None:
    conn = FakeConnector()
    original = order_row(11, 5, 393)
    tx = (
        conn.transaction()
        .insert("orders", order_row(30, 9, 393, action="DISCONTINUE", previous_order_id=11))
        .insert("drug_order", drug_order_row(30))
        .update("orders", original, date_stopped=ms("2024-05-08 09:00:00"))
        .commit()
    )
    touches = _touches(tx)
    assert touches.encounter_ids == {5, 9}
    assert touches.order_ids_to_resolve == frozenset()


def test_fhir_path_encounter_diagnosis() -> None:
    tx = FakeConnector().transaction().insert("encounter_diagnosis", encounter_diagnosis_row(1, 5)).commit()
    assert _touches(tx).encounter_ids == {5}


def test_insurance_data_touches_patients() -> None:
    tx = (
        FakeConnector()
        .transaction()
        .insert("person_attribute", person_attribute_row(3, 74))
        .insert("patient_identifier", patient_identifier_row(9, 75))
        .commit()
    )
    touches = _touches(tx)
    assert touches.patient_ids == {74, 75}
    assert touches.encounter_ids == touches.visit_ids == frozenset()


def test_tables_outside_the_table_touch_nothing() -> None:
    tx = FakeConnector().transaction().insert("conditions", {"condition_id": 1, "encounter_id": 5}).commit()
    assert "conditions" not in EXTRACTORS
    assert _touches(tx).empty


def test_obs_without_encounter_is_skipped() -> None:
    tx = FakeConnector().transaction().insert("obs", obs_row(90, None, 15)).commit()
    assert _touches(tx).empty


def test_accepts_plain_rows_and_merges() -> None:
    conn = FakeConnector()
    first = touched_by(_rows(bahmni_save(conn, encounter_id=5, visit_id=3)))
    second = touched_by(_rows(close_visit(conn, visit_id=3)))
    merged = first.merge(second)
    assert merged.encounter_ids == {5} and merged.visits_closed == {3}
    assert dict(merged.encounter_visits) == {5: 3}
    assert Touches().empty


def test_undecodable_id_is_malformed() -> None:
    tx = FakeConnector().transaction().insert("obs", {**obs_row(56, 5, 15), "encounter_id": "five"}).commit()
    with pytest.raises(MalformedEvent) as err:
        touched_by(_rows(tx))
    assert err.value.reason == "invalid_value"


def test_slimmed_rows_touch_exactly_what_full_rows_touch() -> None:
    from debezium_fixtures import FakeConnector, bahmni_save, close_visit, diagnosis_revision, parsed, void_encounter

    from cdc_claims.capture import TOUCH_COLUMNS, RowChange, slim, touched_by

    conn = FakeConnector()
    for tx in (bahmni_save(conn), diagnosis_revision(conn), void_encounter(conn), close_visit(conn)):
        rows = [e for e in parsed(tx.in_order()) if isinstance(e, RowChange)]
        slimmed = [slim(r) for r in rows]
        assert touched_by(slimmed) == touched_by(rows)
        assert all(set(image) <= TOUCH_COLUMNS for r in slimmed for image in r.images)
        assert any(len(image) > len(TOUCH_COLUMNS) for r in rows for image in r.images)  # obs rows are wide
