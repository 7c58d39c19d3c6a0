"""The consumer's look-ups: a patient change finds the held encounters it may unblock."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cdc_claims.ledger.model import LedgerEntry
from cdc_claims.lifecycle import State
from cdc_claims.pipeline.lookups import ConsumerLookups


class Directory:
    def __init__(self) -> None:
        self.asked: list[tuple[str, list[Any]]] = []

    def order_encounters(self, order_ids: Iterable[int]) -> Mapping[int, int]:
        return {o: o * 10 for o in order_ids}

    def encounter_visit(self, encounter_ids: Iterable[int]) -> Mapping[int, int]:
        return {e: 1 for e in encounter_ids}

    def person_uuids(self, person_ids: Iterable[int]) -> Mapping[int, str]:
        ids = sorted(person_ids)
        self.asked.append(("person_uuids", ids))
        return {i: f"patient-{i}" for i in ids if i != 99}

    def encounter_ids(self, uuids: Iterable[str]) -> Mapping[str, int]:
        wanted = sorted(uuids)
        self.asked.append(("encounter_ids", wanted))
        return {u: int(u.rsplit("-", 1)[1]) for u in wanted if u != "enc-gone-0"}

    def unit_id(self, kind: str, uuid: str) -> int | None:
        return None


class Ledger:
    def __init__(self, entries: list[LedgerEntry]) -> None:
        self.entries = entries

    def list_by_state(self, states: Iterable[State]) -> list[LedgerEntry]:
        wanted = set(states)
        return [e for e in self.entries if e.state in wanted]


def held(uuid: str, patient: str, kind: str = "encounter", state: State = State.HELD) -> LedgerEntry:
    return LedgerEntry(kind, uuid, state, patient_uuid=patient)  # type: ignore[arg-type]


def lookups(entries: list[LedgerEntry]) -> tuple[ConsumerLookups, Directory]:
    directory = Directory()
    return ConsumerLookups(directory, Ledger(entries)), directory  # type: ignore[arg-type]


def test_a_patient_change_finds_only_that_patients_held_encounters() -> None:
    found, _ = lookups(
        [
            held("enc-5", "patient-1"),
            held("enc-6", "patient-2"),
            held("enc-7", "patient-1", state=State.CHECKED),  # not held
            held("visit-8", "patient-1", kind="visit"),  # visits settle on their own
            held("enc-gone-0", "patient-1"),  # held, then purged from the database
        ]
    )
    assert found.patient_held_encounters([1]) == [("enc-5", 5)]


def test_no_database_question_when_nothing_is_held_or_no_patient_changed() -> None:
    found, directory = lookups([held("enc-5", "patient-1", state=State.CHECKED)])
    assert found.patient_held_encounters([1]) == []
    assert found.patient_held_encounters([]) == []
    assert directory.asked == []


def test_order_and_visit_look_ups_go_to_the_directory() -> None:
    found, _ = lookups([])
    assert found.order_encounters([3]) == {3: 30}
    assert found.encounter_visit([4]) == {4: 1}
