"""The consumer's look-ups: which encounter an order belongs to, which visit an encounter, and
which held encounters a patient change may unblock (a missing insurance number added later).

Glue over two ports, no SQL: the database directory answers ids and uuids, the ledger knows
what is held.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cdc_claims.lifecycle import State
from cdc_claims.payer.checks import PAYER_REASONS
from cdc_claims.pipeline.ports import ClaimLedger, Directory
from cdc_claims.settings import UnitKind

#: held reasons whose fix leaves no trace on the unit itself, so it is looked at again on a timer:
#: the payer's (a policy renewed, a pricelist line added in openIMIS) and a required document
#: (Bahmni files an upload in an encounter of its own, which does not touch the held one)
RECHECKED_REASONS = frozenset((*PAYER_REASONS, "attachment_missing"))


@dataclass
class ConsumerLookups:
    """The consumer role's ``Lookups`` port."""

    directory: Directory
    ledger: ClaimLedger

    def order_encounters(self, order_ids: Iterable[int]) -> Mapping[int, int]:
        return self.directory.order_encounters(order_ids)

    def encounter_visit(self, encounter_ids: Iterable[int]) -> Mapping[int, int]:
        return self.directory.encounter_visit(encounter_ids)

    def patient_held_encounters(self, patient_ids: Iterable[int]) -> list[tuple[str, int]]:
        """(uuid, encounter_id) of the held encounters of these patients: a change to a
        patient's identifiers or attributes is the fix a held claim may have waited for."""
        ids = set(patient_ids)
        if not ids:
            return []
        held = [e for e in self.ledger.list_by_state([State.HELD]) if e.unit_kind == "encounter"]
        if not held:
            return []
        patients = set(self.directory.person_uuids(ids).values())
        wanted = [e.unit_uuid for e in held if e.patient_uuid in patients]
        if not wanted:
            return []
        return sorted(self.directory.encounter_ids(wanted).items())

    def held_units_to_recheck(self) -> list[tuple[UnitKind, int]]:
        """(kind, id) of the units held for a reason in :data:`RECHECKED_REASONS`."""
        out: list[tuple[UnitKind, int]] = []
        for entry in self.ledger.list_by_state([State.HELD]):
            if entry.reason in RECHECKED_REASONS:
                unit_id = self.directory.unit_id(entry.unit_kind, entry.unit_uuid)
                if unit_id is not None:
                    out.append((entry.unit_kind, unit_id))
        return out
