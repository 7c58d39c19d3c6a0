"""Which encounters, visits and patients a committed transaction touched.

A Bahmni Save often leaves the ``encounter`` row itself untouched (``DATA_MODEL.md`` §2, §6):
the encounter is found through the ``encounter_id`` carried by ``obs``, ``orders``,
``encounter_diagnosis`` and ``encounter_provider``. Both row images count, so a row moved
from one encounter to another, or voided, touches both sides. One transaction can touch two
encounters (a diagnosis revision re-versions a member of the *older* encounter's group).

The rules are one table, :data:`EXTRACTORS` (table name -> extractor), in the h11 habit of
dict-driven behaviour: to capture a new table, add one small function and one entry. Tables
not in the table (``conditions``, ``event_records``...) touch nothing. No database here:
``drug_order`` rows carry only ``order_id``, so when their ``orders`` row is not in the same
transaction the order id is reported for the caller to resolve.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from cdc_claims.capture.envelope import Op, Row, RowChange, as_bool, as_datetime, as_int
from cdc_claims.capture.transactions import Transaction


@dataclass(frozen=True)
class Touches:
    """What one transaction (or several, merged) changed, by claim-relevant id."""

    encounter_ids: frozenset[int] = frozenset()
    visit_ids: frozenset[int] = frozenset()
    visits_closed: frozenset[int] = frozenset()  # date_stopped went from null to set
    visits_reopened: frozenset[int] = frozenset()  # date_stopped went from set to null
    visits_voided: frozenset[int] = frozenset()  # voided flipped to 1, or the row was deleted
    encounters_voided: frozenset[int] = frozenset()  # voided flipped to 1, or the row was deleted
    order_ids_to_resolve: frozenset[int] = frozenset()  # drug_order rows whose orders row is elsewhere
    patient_ids: frozenset[int] = frozenset()  # insurance data (identifier / person attribute) changed
    #: encounter_id -> visit_id, from encounter rows in the transaction (the after image wins).
    encounter_visits: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    @property
    def empty(self) -> bool:
        return not (
            self.encounter_ids
            or self.visit_ids
            or self.encounters_voided
            or self.visits_voided
            or self.order_ids_to_resolve
            or self.patient_ids
        )

    def merge(self, other: Touches) -> Touches:
        return Touches(
            encounter_ids=self.encounter_ids | other.encounter_ids,
            visit_ids=self.visit_ids | other.visit_ids,
            visits_closed=self.visits_closed | other.visits_closed,
            visits_reopened=self.visits_reopened | other.visits_reopened,
            visits_voided=self.visits_voided | other.visits_voided,
            encounters_voided=self.encounters_voided | other.encounters_voided,
            order_ids_to_resolve=self.order_ids_to_resolve | other.order_ids_to_resolve,
            patient_ids=self.patient_ids | other.patient_ids,
            encounter_visits=MappingProxyType({**self.encounter_visits, **other.encounter_visits}),
        )


@dataclass
class _Collector:
    """Mutable scratchpad filled by the extractors of one transaction, then frozen."""

    encounters: set[int] = field(default_factory=set)
    visits: set[int] = field(default_factory=set)
    visits_closed: set[int] = field(default_factory=set)
    visits_reopened: set[int] = field(default_factory=set)
    visits_voided: set[int] = field(default_factory=set)
    encounters_voided: set[int] = field(default_factory=set)
    orders_seen: set[int] = field(default_factory=set)
    drug_orders: set[int] = field(default_factory=set)
    patients: set[int] = field(default_factory=set)
    encounter_visits: dict[int, int] = field(default_factory=dict)

    def freeze(self) -> Touches:
        return Touches(
            encounter_ids=frozenset(self.encounters),
            visit_ids=frozenset(self.visits),
            visits_closed=frozenset(self.visits_closed),
            visits_reopened=frozenset(self.visits_reopened),
            visits_voided=frozenset(self.visits_voided),
            encounters_voided=frozenset(self.encounters_voided),
            order_ids_to_resolve=frozenset(self.drug_orders - self.orders_seen),
            patient_ids=frozenset(self.patients),
            encounter_visits=MappingProxyType(dict(self.encounter_visits)),
        )


Extractor = Callable[[RowChange, _Collector], None]


def _ids(row: RowChange, column: str) -> set[int]:
    """The non-null values of ``column`` in both images."""
    found = (as_int(image.get(column)) for image in row.images)
    return {value for value in found if value is not None}


def _flipped_on(row: RowChange, flag: Callable[[Row], bool]) -> bool:
    """True when ``flag`` is false (or there was no row) before and true after, or on delete."""
    if row.op is Op.DELETE:
        return True
    was = row.before is not None and flag(row.before)
    return row.after is not None and flag(row.after) and not was


def _voided(image: Row) -> bool:
    return bool(as_bool(image.get("voided")))


def _stopped(image: Row) -> bool:
    return as_datetime(image.get("date_stopped")) is not None


def _encounter_child(row: RowChange, acc: _Collector) -> None:
    """obs, encounter_diagnosis, encounter_provider: the parent encounter, old and new."""
    acc.encounters |= _ids(row, "encounter_id")


def _encounter(row: RowChange, acc: _Collector) -> None:
    acc.encounters |= _ids(row, "encounter_id")
    acc.visits |= _ids(row, "visit_id")
    encounter_id = as_int(row.value("encounter_id"))
    visit_id = as_int(row.value("visit_id"))
    if encounter_id is not None and visit_id is not None:
        acc.encounter_visits[encounter_id] = visit_id
    if encounter_id is not None and _flipped_on(row, _voided):
        acc.encounters_voided.add(encounter_id)


def _orders(row: RowChange, acc: _Collector) -> None:
    acc.encounters |= _ids(row, "encounter_id")
    acc.orders_seen |= _ids(row, "order_id")


def _drug_order(row: RowChange, acc: _Collector) -> None:
    acc.drug_orders |= _ids(row, "order_id")


def _visit(row: RowChange, acc: _Collector) -> None:
    visit_id = as_int(row.value("visit_id"))
    if visit_id is None:
        return
    acc.visits.add(visit_id)
    if row.op is not Op.DELETE and _flipped_on(row, _stopped):
        acc.visits_closed.add(visit_id)
    if row.before is not None and row.after is not None and _stopped(row.before) and not _stopped(row.after):
        acc.visits_reopened.add(visit_id)
    if _flipped_on(row, _voided):
        acc.visits_voided.add(visit_id)


def _visit_attribute(row: RowChange, acc: _Collector) -> None:
    acc.visits |= _ids(row, "visit_id")


def _patient_column(column: str) -> Extractor:
    def extract(row: RowChange, acc: _Collector) -> None:
        acc.patients |= _ids(row, column)

    return extract


#: Table -> what its rows touch. The only place that knows which column links to what.
EXTRACTORS: dict[str, Extractor] = {
    "encounter": _encounter,
    "obs": _encounter_child,
    "encounter_diagnosis": _encounter_child,
    "encounter_provider": _encounter_child,
    "orders": _orders,
    "drug_order": _drug_order,
    "visit": _visit,
    "visit_attribute": _visit_attribute,
    "patient_identifier": _patient_column("patient_id"),
    "person_attribute": _patient_column("person_id"),
}


def touched_by(source: Transaction | Iterable[RowChange]) -> Touches:
    """What a (completed or partial) transaction touched.

    Raises :class:`~cdc_claims.errors.MalformedEvent` if an id or flag column cannot be decoded.
    """
    rows = source.rows if isinstance(source, Transaction) else source
    acc = _Collector()
    for row in rows:
        extract = EXTRACTORS.get(row.table)
        if extract is not None:
            extract(row, acc)
    return acc.freeze()


#: Every column an extractor reads: a buffered row needs nothing else.
TOUCH_COLUMNS = frozenset({"encounter_id", "visit_id", "voided", "date_stopped", "order_id", "patient_id", "person_id"})


def slim(row: RowChange) -> RowChange:
    """The row with only :data:`TOUCH_COLUMNS` in its images.

    Rows wait in memory until their whole transaction arrived (rows and END come from different
    topics); an ``obs`` image has some 30 columns, of which touches read at most three.
    """

    def keep(image: Row | None) -> Row | None:
        if image is None:
            return None
        return MappingProxyType({k: v for k, v in image.items() if k in TOUCH_COLUMNS})

    return replace(row, before=keep(row.before), after=keep(row.after))
