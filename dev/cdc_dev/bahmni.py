"""A Bahmni "Save" simulator: writes what Bahmni writes, one Save = one database transaction.

Test and demo tooling (end-to-end tests, the benchmark, the README demo). It reproduces the row
shapes of the legacy save path (``POST /bahmnicore/bahmniencounter``, ``DATA_MODEL.md`` §2.2) and
of the edits of §5, directly in SQL, so that change-data capture sees what it would see behind a
real Bahmni:

* a Save creates or **reuses** the Consultation encounter (the 60-minute session matcher, §2.3)
  and, when reusing it, leaves the ``encounter`` row untouched (``date_changed`` stays NULL);
* diagnoses are ``Visit Diagnoses`` obs groups with the Bahmni members (Initial Diagnosis =
  the chain's first group uuid, Revised = False), §3.1;
* orders take their number from GP ``order.nextOrderNumberSeed`` (SELECT … FOR UPDATE, like
  OpenMRS), drugs get a ``drug_order`` row; edits insert new versions and stop/void old ones;
* the Save ends with ``visit_attribute`` ``Visit Status`` (inserted if missing) and one
  ``event_records`` row of category ``Encounter`` (not for voids, like atomfeed).

Everything is resolved by uuid, mapping or name (:mod:`cdc_dev.bahmni_meta`).
Dates are the current UTC time (whole seconds). Every returned ref carries ``committed_at``:
``time.time()`` taken right after COMMIT, for commit → billing-row latency measurements.

Several edits can share one transaction, as in one Bahmni Save::

    with sim.save(encounter) as s:
        s.edit_diagnosis_certainty(dx, "CONFIRMED")
        s.revise_drug(order, 10)
        s.add_order("lab", THYROID_FUNCTION)
    ref = s.result
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from pymysql.cursors import DictCursor

from cdc_claims.db import Committed, ConnFactory, transaction
from cdc_dev import bahmni_meta as md

Certainty = Literal["CONFIRMED", "PROVISIONAL"]
OrderKind = Literal["drug", "lab", "radiology", "procedure"]
CareSetting = Literal["OUTPATIENT", "INPATIENT"]

#: The Bahmni demo clinician ("superman"), provider uuid.
SUPERMAN_PROVIDER = "c1c26908-3f10-11e4-adec-0800271c1b75"
_UUID_RE = re.compile(r"^[0-9a-fA-F-]{36}$")


# ---------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Dx:
    """A diagnosis as the clinician enters it: a coded concept uuid, or free text."""

    concept: str | None = None  # diagnosis concept uuid (class Diagnosis)
    certainty: Certainty = "CONFIRMED"
    primary: bool = True
    text: str | None = field(default=None, kw_only=True)  # free-text (non-coded) diagnosis

    def __post_init__(self) -> None:
        if (self.concept is None) == (self.text is None):
            raise ValueError("Dx needs exactly one of concept (uuid) or text")


@dataclass(frozen=True)
class Drug:
    drug: str  # drug uuid (table ``drug``)
    quantity: Decimal | int | float
    care_setting: CareSetting = "OUTPATIENT"
    duration_days: int = 5


# ---------------------------------------------------------------------------- refs
@dataclass(frozen=True)
class PatientRef:
    patient_id: int
    uuid: str
    identifier: str  # Bahmni primary identifier (MRN)
    insurance_number: str | None
    committed_at: float = 0.0


@dataclass(frozen=True)
class VisitRef:
    visit_id: int
    uuid: str
    patient_id: int
    patient_uuid: str
    location_id: int  # the visit location
    visit_type_id: int
    committed_at: float = 0.0


@dataclass(frozen=True)
class ObsRef:
    obs_id: int
    uuid: str
    encounter_id: int
    concept_id: int


@dataclass(frozen=True)
class DxRef:
    """A ``Visit Diagnoses`` group."""

    group_obs_id: int
    group_uuid: str
    encounter_id: int
    concept_id: int | None  # coded diagnosis concept, None when free text
    initial_uuid: str  # first group uuid of this diagnosis chain
    members: tuple[ObsRef, ...] = ()


@dataclass(frozen=True)
class OrderRef:
    order_id: int
    uuid: str
    order_number: str
    kind: OrderKind
    action: Literal["NEW", "REVISE", "DISCONTINUE"]
    concept_id: int
    encounter_id: int
    previous_order_id: int | None = None
    drug_id: int | None = None
    quantity: Decimal | None = None


@dataclass(frozen=True)
class EncounterRef:
    """What one Save did. ``created`` is False when the session matcher reused the encounter."""

    encounter_id: int
    uuid: str
    visit: VisitRef
    created: bool
    diagnoses: tuple[DxRef, ...] = ()
    orders: tuple[OrderRef, ...] = ()
    obs: tuple[ObsRef, ...] = ()  # other obs written (procedure obs, re-versioned members)
    touched_encounter_ids: tuple[int, ...] = ()  # every encounter this transaction wrote into
    committed_at: float = 0.0


@dataclass(frozen=True)
class DiagnosisRowRef:
    diagnosis_id: int
    uuid: str
    encounter_id: int
    committed_at: float = 0.0


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _new_uuid() -> str:
    return str(uuid.uuid4())


# ---------------------------------------------------------------------------- one Save
@dataclass
class Save:
    """The body of one Bahmni Save (one transaction). Created by :meth:`BahmniSim.save`."""

    cur: DictCursor
    meta: md.BahmniMeta
    now: datetime
    visit: VisitRef
    encounter_id: int
    encounter_uuid: str
    location_id: int
    created: bool
    visit_created: bool = False
    _diagnoses: list[DxRef] = field(default_factory=list)
    _orders: list[OrderRef] = field(default_factory=list)
    _obs: list[ObsRef] = field(default_factory=list)
    _touched: set[int] = field(default_factory=set)
    _committed_at: float | None = None

    # ------------------------------------------------------------------ obs
    def _insert_obs(
        self,
        concept: int,
        *,
        group: int | None = None,
        encounter_id: int | None = None,
        value_coded: int | None = None,
        value_text: str | None = None,
        obs_uuid: str | None = None,
        previous_version: int | None = None,
        status: str = "FINAL",
        obs_datetime: datetime | None = None,
    ) -> ObsRef:
        enc = encounter_id or self.encounter_id
        obs_uuid = obs_uuid or _new_uuid()
        self.cur.execute(
            "INSERT INTO obs (person_id, concept_id, encounter_id, obs_datetime, location_id, obs_group_id,"
            " value_coded, value_text, creator, date_created, voided, uuid, previous_version, status)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0, %s, %s, %s)",
            (
                self.visit.patient_id,
                concept,
                enc,
                obs_datetime or self.now,
                self.location_id,
                group,
                value_coded,
                value_text,
                self.meta.user_id,
                self.now,
                obs_uuid,
                previous_version,
                status,
            ),
        )
        self._touched.add(enc)
        return ObsRef(int(self.cur.lastrowid), obs_uuid, enc, concept)

    def _void_obs(self, where: str, args: tuple[Any, ...], reason: str) -> int:
        self.cur.execute(
            f"UPDATE obs SET voided = 1, voided_by = %s, date_voided = %s, void_reason = %s"  # noqa: S608
            f" WHERE voided = 0 AND {where}",
            (self.meta.user_id, self.now, reason, *args),
        )
        return int(self.cur.rowcount)

    def _reversion_member(self, group_obs_id: int, concept: int, *, value_coded: int, reason: str) -> ObsRef:
        """Edit one member: new obs (previous_version, AMENDED) + the old one voided (§5)."""
        self.cur.execute(
            "SELECT obs_id, encounter_id, obs_datetime, status FROM obs"
            " WHERE obs_group_id = %s AND concept_id = %s AND voided = 0 ORDER BY obs_id DESC LIMIT 1",
            (group_obs_id, concept),
        )
        old = self.cur.fetchone()
        if old is None:
            raise LookupError(f"no current member {concept} in obs group {group_obs_id}")
        new = self._insert_obs(
            concept,
            group=group_obs_id,
            encounter_id=int(old["encounter_id"]),
            value_coded=value_coded,
            previous_version=int(old["obs_id"]),
            status="AMENDED" if old["status"] == "FINAL" else str(old["status"]),
            obs_datetime=old["obs_datetime"],
        )
        self._void_obs("obs_id = %s", (old["obs_id"],), reason)
        self._obs.append(new)
        return new

    # ------------------------------------------------------------------ diagnoses
    def add_diagnosis(self, dx: Dx, *, initial_uuid: str | None = None) -> DxRef:
        """A new ``Visit Diagnoses`` group with its emrapi and Bahmni members."""
        m, c = self.meta, self.meta.concepts
        coded = None
        if dx.concept is not None:
            coded = md.concept_id(self.cur, dx.concept)
            if coded is None:
                raise LookupError(f"diagnosis concept {dx.concept} not found")
        group_uuid = _new_uuid()
        group = self._insert_obs(c[md.VISIT_DIAGNOSES], obs_uuid=group_uuid)
        members = [
            self._insert_obs(c[md.CODED_DIAGNOSIS], group=group.obs_id, value_coded=coded)
            if coded is not None
            else self._insert_obs(c[md.NON_CODED_DIAGNOSIS], group=group.obs_id, value_text=dx.text),
            self._insert_obs(c[md.DIAGNOSIS_CERTAINTY], group=group.obs_id, value_coded=m.certainty[dx.certainty]),
            self._insert_obs(c[md.DIAGNOSIS_ORDER], group=group.obs_id, value_coded=m.dx_order[dx.primary]),
        ]
        initial = initial_uuid or group_uuid
        members.append(self._insert_obs(c[md.BAHMNI_INITIAL_DIAGNOSIS], group=group.obs_id, value_text=initial))
        members.append(self._insert_obs(c[md.BAHMNI_DIAGNOSIS_REVISED], group=group.obs_id, value_coded=m.false_id))
        ref = DxRef(group.obs_id, group_uuid, self.encounter_id, coded, initial, tuple(members))
        self._diagnoses.append(ref)
        return ref

    def edit_diagnosis_certainty(self, dx: DxRef, certainty: Certainty) -> ObsRef:
        """Re-version the certainty member only; the group is untouched."""
        return self._reversion_member(
            dx.group_obs_id,
            self.meta.concepts[md.DIAGNOSIS_CERTAINTY],
            value_coded=self.meta.certainty[certainty],
            reason="Diagnosis certainty changed",
        )

    def void_diagnosis(self, dx: DxRef) -> int:
        """Delete a diagnosis in the UI: the group and all its members voided. Returns rows voided."""
        count = self._void_obs("(obs_id = %s OR obs_group_id = %s)", (dx.group_obs_id, dx.group_obs_id), "Deleted")
        self._touched.add(dx.encounter_id)
        return count

    def revise_diagnosis(self, original: DxRef, dx: Dx) -> DxRef:
        """A follow-up diagnosis: new group here (Initial = the chain's first group), and the
        original group's ``Revised`` member re-versioned to True in the ORIGINAL encounter."""
        c = self.meta.concepts
        self.cur.execute(
            "SELECT value_text FROM obs WHERE obs_group_id = %s AND concept_id = %s AND voided = 0 LIMIT 1",
            (original.group_obs_id, c[md.BAHMNI_INITIAL_DIAGNOSIS]),
        )
        row = self.cur.fetchone()
        chain = str(row["value_text"]) if row and row["value_text"] else original.group_uuid
        ref = self.add_diagnosis(dx, initial_uuid=chain)
        self._reversion_member(
            original.group_obs_id, c[md.BAHMNI_DIAGNOSIS_REVISED], value_coded=self.meta.true_id, reason="Revised"
        )
        return ref

    def add_procedure_obs(self, procedure_concept: str) -> ObsRef:
        """An ``Operative Notes`` form entry: group + ``Operative Notes, Procedure`` = the answer."""
        answer = md.concept_id(self.cur, procedure_concept)
        question = self.meta.concepts.get(md.OPERATIVE_NOTES_PROCEDURE)
        if answer is None or question is None:
            raise LookupError(f"procedure concept {procedure_concept} or 'Operative Notes, Procedure' not found")
        group = None
        if self.meta.operative_notes_id is not None:
            group = self._insert_obs(self.meta.operative_notes_id).obs_id
        ref = self._insert_obs(question, group=group, value_coded=answer)
        self._obs.append(ref)
        return ref

    # ------------------------------------------------------------------ orders
    def _order_number(self) -> str:
        self.cur.execute(
            "SELECT property_value FROM global_property WHERE property = 'order.nextOrderNumberSeed' FOR UPDATE"
        )
        row = self.cur.fetchone()
        seed = int(row["property_value"]) if row and str(row["property_value"] or "").isdigit() else 1
        if row is None:
            self.cur.execute(
                "INSERT INTO global_property (property, property_value, description, uuid) VALUES"
                " ('order.nextOrderNumberSeed', %s, 'The next order number available for assignment', %s)",
                (str(seed + 1), _new_uuid()),
            )
        else:
            self.cur.execute(
                "UPDATE global_property SET property_value = %s WHERE property = 'order.nextOrderNumberSeed'",
                (str(seed + 1),),
            )
        return f"ORD-{seed}"

    def _order_type_id(self, kind: OrderKind) -> int:
        if kind == "procedure":
            return ensure_procedure_order_type(self.cur, self.meta.user_id, self.now)
        return self.meta.order_types[kind]

    def _insert_order(
        self,
        kind: OrderKind,
        concept: int,
        *,
        action: Literal["NEW", "REVISE", "DISCONTINUE"] = "NEW",
        previous: int | None = None,
        care_setting: CareSetting = "OUTPATIENT",
        auto_expire: datetime | None = None,
    ) -> tuple[int, str, str]:
        number = self._order_number()
        order_uuid = _new_uuid()
        scheduled = kind == "drug" and action != "DISCONTINUE"
        self.cur.execute(
            "INSERT INTO orders (order_type_id, concept_id, orderer, encounter_id, date_activated, auto_expire_date,"
            " creator, date_created, voided, patient_id, uuid, urgency, order_number, previous_order_id, order_action,"
            " care_setting, scheduled_date) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                self._order_type_id(kind),
                concept,
                self.meta.provider_id,
                self.encounter_id,
                self.now,
                auto_expire,
                self.meta.user_id,
                self.now,
                self.visit.patient_id,
                order_uuid,
                "ON_SCHEDULED_DATE" if scheduled else "ROUTINE",
                number,
                previous,
                action,
                self.meta.care_settings[care_setting],
                self.now if scheduled else None,
            ),
        )
        self._touched.add(self.encounter_id)
        return int(self.cur.lastrowid), order_uuid, number

    def _insert_drug_order(self, order_id: int, drug_id: int, quantity: Decimal | None, duration: int | None) -> None:
        m = self.meta
        dosing = None if quantity is None else json.dumps({"instructions": "As directed"})
        self.cur.execute(
            "INSERT INTO drug_order (order_id, drug_inventory_id, dose, as_needed, dosing_type, quantity, num_refills,"
            " dosing_instructions, duration, duration_units, quantity_units, route, dose_units, frequency,"
            " dispense_as_written) VALUES (%s, %s, %s, 0, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0)",
            (
                order_id,
                drug_id,
                None if quantity is None else 1,
                md.FLEXIBLE_DOSING,
                None if quantity is None else float(quantity),
                None if quantity is None else 0,
                dosing,
                duration,
                None if duration is None else m.days_unit,
                None if quantity is None else m.tablet_unit,
                None if quantity is None else m.route_oral,
                None if quantity is None else m.tablet_unit,
                None if quantity is None else m.frequency_id,
            ),
        )

    def add_drug(self, drug: Drug) -> OrderRef:
        self.cur.execute("SELECT drug_id, concept_id FROM drug WHERE uuid = %s", (drug.drug,))
        row = self.cur.fetchone()
        if row is None:
            raise LookupError(f"drug {drug.drug} not found")
        qty = Decimal(str(drug.quantity))
        order_id, order_uuid, number = self._insert_order(
            "drug",
            int(row["concept_id"]),
            care_setting=drug.care_setting,
            auto_expire=self.now + timedelta(days=drug.duration_days),
        )
        self._insert_drug_order(order_id, int(row["drug_id"]), qty, drug.duration_days)
        ref = OrderRef(
            order_id,
            order_uuid,
            number,
            "drug",
            "NEW",
            int(row["concept_id"]),
            self.encounter_id,
            drug_id=int(row["drug_id"]),
            quantity=qty,
        )
        self._orders.append(ref)
        return ref

    def add_order(self, kind: Literal["lab", "radiology", "procedure"], concept: str) -> OrderRef:
        """A lab, radiology or (Bahmni 1.0) procedure order: a plain ``orders`` row."""
        concept_id = md.concept_id(self.cur, concept)
        if concept_id is None:
            raise LookupError(f"orderable concept {concept} not found")
        order_id, order_uuid, number = self._insert_order(kind, concept_id)
        ref = OrderRef(order_id, order_uuid, number, kind, "NEW", concept_id, self.encounter_id)
        self._orders.append(ref)
        return ref

    def _stop(self, order: OrderRef, action: Literal["REVISE", "DISCONTINUE"]) -> dict[str, Any]:
        self.cur.execute(
            "SELECT o.order_id, o.concept_id, o.care_setting, o.date_stopped, o.voided, c.care_setting_type,"
            " d.drug_inventory_id, d.duration FROM orders o JOIN care_setting c ON c.care_setting_id = o.care_setting"
            " LEFT JOIN drug_order d ON d.order_id = o.order_id WHERE o.order_id = %s FOR UPDATE",
            (order.order_id,),
        )
        old = self.cur.fetchone()
        if old is None or old["voided"] or old["date_stopped"] is not None:
            raise ValueError(f"order {order.uuid} is not active; cannot {action.lower()} it")
        # OpenMRS stops the previous order "a moment before" the new one's date_activated
        self.cur.execute(
            "UPDATE orders SET date_stopped = %s WHERE order_id = %s", (self.now - timedelta(seconds=1), order.order_id)
        )
        self._touched.add(order.encounter_id)
        return old

    def revise_drug(self, order: OrderRef, new_quantity: Decimal | int | float) -> OrderRef:
        """REVISE: a new order row (previous_order_id, new drug_order) + date_stopped on the old one."""
        old = self._stop(order, "REVISE")
        qty = Decimal(str(new_quantity))
        duration = int(old["duration"]) if old["duration"] is not None else 5
        order_id, order_uuid, number = self._insert_order(
            "drug",
            int(old["concept_id"]),
            action="REVISE",
            previous=order.order_id,
            care_setting=old["care_setting_type"],
            auto_expire=self.now + timedelta(days=duration),
        )
        self._insert_drug_order(order_id, int(old["drug_inventory_id"]), qty, duration)
        ref = OrderRef(
            order_id,
            order_uuid,
            number,
            "drug",
            "REVISE",
            int(old["concept_id"]),
            self.encounter_id,
            previous_order_id=order.order_id,
            drug_id=int(old["drug_inventory_id"]),
            quantity=qty,
        )
        self._orders.append(ref)
        return ref

    def discontinue_order(self, order: OrderRef) -> OrderRef:
        """DISCONTINUE: a new row (drugs also get a ``drug_order``) + date_stopped on the old one."""
        old = self._stop(order, "DISCONTINUE")
        order_id, order_uuid, number = self._insert_order(
            order.kind,
            int(old["concept_id"]),
            action="DISCONTINUE",
            previous=order.order_id,
            care_setting=old["care_setting_type"],
        )
        if order.kind == "drug" and old["drug_inventory_id"] is not None:
            self._insert_drug_order(order_id, int(old["drug_inventory_id"]), None, None)
        ref = OrderRef(
            order_id,
            order_uuid,
            number,
            order.kind,
            "DISCONTINUE",
            int(old["concept_id"]),
            self.encounter_id,
            previous_order_id=order.order_id,
            drug_id=order.drug_id,
        )
        self._orders.append(ref)
        return ref

    # ------------------------------------------------------------------ end of the Save
    def _finish(self) -> None:
        """BahmniVisitAttributeService + the atomfeed Encounter event (§2.2 steps 4-5)."""
        m = self.meta
        if m.visit_status_type_id is not None:
            self.cur.execute(
                "SELECT visit_attribute_id FROM visit_attribute WHERE visit_id = %s AND attribute_type_id = %s"
                " AND voided = 0",
                (self.visit.visit_id, m.visit_status_type_id),
            )
            if self.cur.fetchone() is None:
                self.cur.execute("SELECT name FROM visit_type WHERE visit_type_id = %s", (self.visit.visit_type_id,))
                vt = self.cur.fetchone()
                value = "IPD" if vt and str(vt["name"]).upper() == "IPD" else "OPD"
                self.cur.execute(
                    "INSERT INTO visit_attribute (visit_id, attribute_type_id, value_reference, uuid, creator,"
                    " date_created, voided) VALUES (%s, %s, %s, %s, %s, %s, 0)",
                    (self.visit.visit_id, m.visit_status_type_id, value, _new_uuid(), m.user_id, self.now),
                )
        _event_record(self.cur, "Encounter", self.encounter_uuid, self.now)

    @property
    def result(self) -> EncounterRef:
        """The Save's outcome; ``committed_at`` is set once the transaction committed."""
        return EncounterRef(
            encounter_id=self.encounter_id,
            uuid=self.encounter_uuid,
            visit=self.visit,
            created=self.created,
            diagnoses=tuple(self._diagnoses),
            orders=tuple(self._orders),
            obs=tuple(self._obs),
            touched_encounter_ids=tuple(sorted(self._touched | {self.encounter_id})),
            committed_at=self._committed_at or 0.0,
        )


def _event_record(cur: DictCursor, category: str, object_uuid: str, now: datetime) -> None:
    """One atomfeed ``event_records`` row (the 0.94 layout), if the table exists."""
    cur.execute("SHOW TABLES LIKE 'event_records'")
    if cur.fetchone() is None:
        return
    if category == "Encounter":
        cur.execute("SELECT property_value FROM global_property WHERE property = 'encounter.feed.publish.url'")
        row = cur.fetchone()
        template = (
            str(row["property_value"])
            if row and row["property_value"]
            else ("/openmrs/ws/rest/v1/bahmnicore/bahmniencounter/%s?includeAll=true")
        )
        title, tags = "Encounter", "Encounter"
    else:
        template, title, tags = "/openmrs/ws/rest/v1/patient/%s?v=full", "Patient", "patient"
    cur.execute(
        "INSERT INTO event_records (uuid, title, timestamp, uri, object, category, date_created, tags)"
        " VALUES (%s, %s, %s, NULL, %s, %s, %s, %s)",
        (_new_uuid(), title, now, template.replace("%s", object_uuid), category, now, tags),
    )


def ensure_procedure_order_type(cur: DictCursor, user_id: int, now: datetime) -> int:
    """The Bahmni 1.0 ``Procedure Order`` type (``org.openmrs.Order``, concept class Procedure)."""
    cur.execute(
        "SELECT order_type_id FROM order_type WHERE name = %s OR uuid = %s ORDER BY order_type_id LIMIT 1",
        (md.PROCEDURE_ORDER_TYPE_NAME, md.PROCEDURE_ORDER_TYPE_UUID),
    )
    row = cur.fetchone()
    if row is not None:
        return int(row["order_type_id"])
    cur.execute(
        "INSERT INTO order_type (name, description, creator, date_created, retired, uuid, java_class_name)"
        " VALUES (%s, 'An order for procedures', %s, %s, 0, %s, 'org.openmrs.Order')",
        (md.PROCEDURE_ORDER_TYPE_NAME, user_id, now, md.PROCEDURE_ORDER_TYPE_UUID),
    )
    type_id = int(cur.lastrowid)
    cur.execute("SELECT concept_class_id FROM concept_class WHERE name = 'Procedure' AND retired = 0 LIMIT 1")
    cls = cur.fetchone()
    if cls is not None:
        cur.execute(
            "INSERT INTO order_type_class_map (order_type_id, concept_class_id) VALUES (%s, %s)",
            (type_id, cls["concept_class_id"]),
        )
    return type_id


# ---------------------------------------------------------------------------- the simulator
class BahmniSim:
    """Writes Bahmni's rows. ``conn_factory`` needs full DML rights on the OpenMRS database.

    ``provider_uuid`` is the clinician (default: the demo's ``superman``), ``login_location`` the
    login location (name or uuid; encounters are recorded there, the visit at its nearest ancestor
    tagged ``Visit Location``). ``clock`` returns naive UTC datetimes (default: now).
    """

    def __init__(
        self,
        conn_factory: ConnFactory,
        *,
        provider_uuid: str = SUPERMAN_PROVIDER,
        username: str | None = None,
        login_location: str = "OPD-1",
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._connect = conn_factory
        self._provider_uuid = provider_uuid
        self._username = username
        self._login_location = login_location
        self._clock = clock
        self._meta: md.BahmniMeta | None = None
        self.last_commit_at: float | None = None

    # ------------------------------------------------------------------ plumbing
    def _now(self) -> datetime:
        return self._clock().replace(microsecond=0)

    def meta(self, cur: DictCursor) -> md.BahmniMeta:
        if self._meta is None:
            self._meta = md.load(cur, provider_uuid=self._provider_uuid, username=self._username)
        return self._meta

    @contextmanager
    def _tx(self) -> Iterator[tuple[DictCursor, Committed]]:
        committed = Committed()
        with transaction(self._connect, committed) as cur:
            yield cur, committed
        self.last_commit_at = committed.at

    def _location(self, cur: DictCursor, key: str | None) -> int:
        key = key or self._login_location
        col = "uuid" if _UUID_RE.match(key) else "name"
        cur.execute(f"SELECT location_id FROM location WHERE {col} = %s AND retired = 0 LIMIT 1", (key,))  # noqa: S608
        row = cur.fetchone()
        if row is None:
            raise LookupError(f"location {key!r} not found")
        return int(row["location_id"])

    @staticmethod
    def _visit_location(cur: DictCursor, location_id: int) -> int:
        """Nearest ancestor-or-self tagged ``Visit Location`` (emrapi); itself if none is tagged."""
        current: int | None = location_id
        seen: set[int] = set()
        while current is not None and current not in seen:
            seen.add(current)
            cur.execute(
                "SELECT l.parent_location, EXISTS(SELECT 1 FROM location_tag_map m JOIN location_tag t"
                " ON t.location_tag_id = m.location_tag_id WHERE m.location_id = l.location_id"
                " AND t.name = 'Visit Location') AS tagged FROM location l WHERE l.location_id = %s",
                (current,),
            )
            row = cur.fetchone()
            if row is None:
                break
            if row["tagged"]:
                return current
            current = row["parent_location"]
        return location_id

    # ------------------------------------------------------------------ registration
    def create_patient(
        self, insurance_number: str | None = None, *, gender: Literal["M", "F"] = "M", birthdate: date | None = None
    ) -> PatientRef:
        """Registration: person, synthetic person_name, patient, the primary identifier (idgen),
        an ``ExternalId`` identifier with the openIMIS CHF id when given, one ``patient`` event."""
        with self._tx() as (cur, committed):
            m, now = self.meta(cur), self._now()
            person_uuid = _new_uuid()
            cur.execute(
                "INSERT INTO person (gender, birthdate, birthdate_estimated, dead, creator, date_created, voided, uuid,"
                " deathdate_estimated) VALUES (%s, %s, 0, 0, %s, %s, 0, %s, 0)",
                (gender, birthdate or date(1980, 1, 1), m.user_id, now, person_uuid),
            )
            person_id = int(cur.lastrowid)
            cur.execute(
                "INSERT INTO person_name (preferred, person_id, given_name, family_name, creator, date_created, voided,"
                " uuid) VALUES (1, %s, 'Sim', %s, %s, %s, 0, %s)",
                (person_id, f"Patient{person_id}", m.user_id, now, _new_uuid()),
            )
            cur.execute(
                "INSERT INTO patient (patient_id, creator, date_created, voided, allergy_status)"
                " VALUES (%s, %s, %s, 0, 'Unknown')",
                (person_id, m.user_id, now),
            )
            identifier = self._next_identifier(cur, m, now)
            self._identifier(
                cur, m, person_id, identifier, type_id=m.primary_identifier_type_id, preferred=True, now=now
            )
            if insurance_number is not None:
                if m.external_id_type_id is None:
                    raise md.MetadataMissing("patient identifier type ExternalId (load the iclm schema, Section B)")
                self._identifier(
                    cur, m, person_id, insurance_number, type_id=int(m.external_id_type_id), preferred=False, now=now
                )
            _event_record(cur, "patient", person_uuid, now)
        return PatientRef(person_id, person_uuid, identifier, insurance_number, committed.at or 0.0)

    @staticmethod
    def _identifier(
        cur: DictCursor, m: md.BahmniMeta, pid: int, value: str, *, type_id: int, preferred: bool, now: datetime
    ) -> None:
        cur.execute(
            "INSERT INTO patient_identifier (patient_id, identifier, identifier_type, preferred, location_id, creator,"
            " date_created, voided, uuid) VALUES (%s, %s, %s, %s, NULL, %s, %s, 0, %s)",
            (pid, value, type_id, 1 if preferred else 0, m.user_id, now, _new_uuid()),
        )

    @staticmethod
    def _next_identifier(cur: DictCursor, m: md.BahmniMeta, now: datetime) -> str:
        if m.idgen_source_id is None:
            return f"SIM{uuid.uuid4().hex[:8].upper()}"
        cur.execute(
            "SELECT next_sequence_value, prefix, suffix FROM idgen_seq_id_gen WHERE id = %s FOR UPDATE",
            (m.idgen_source_id,),
        )
        row = cur.fetchone()
        assert row is not None
        value = int(row["next_sequence_value"])
        identifier = f"{row['prefix'] or ''}{value}{row['suffix'] or ''}"
        cur.execute(
            "UPDATE idgen_seq_id_gen SET next_sequence_value = %s WHERE id = %s", (value + 1, m.idgen_source_id)
        )
        cur.execute(
            "INSERT INTO idgen_log_entry (source, identifier, date_generated, generated_by) VALUES (%s, %s, %s, %s)",
            (m.idgen_source_id, identifier, now, m.user_id),
        )
        return identifier

    # ------------------------------------------------------------------ visits
    def _insert_visit(
        self, cur: DictCursor, patient: PatientRef, visit_type: str, location_id: int, now: datetime
    ) -> VisitRef:
        m = self.meta(cur)
        cur.execute(
            "SELECT visit_type_id FROM visit_type WHERE (name = %s OR uuid = %s) AND retired = 0",
            (visit_type, visit_type),
        )
        vt = cur.fetchone()
        if vt is None:
            raise LookupError(f"visit type {visit_type!r} not found")
        visit_uuid = _new_uuid()
        cur.execute(
            "INSERT INTO visit (patient_id, visit_type_id, date_started, location_id, creator, date_created, voided,"
            " uuid) VALUES (%s, %s, %s, %s, %s, %s, 0, %s)",
            (patient.patient_id, vt["visit_type_id"], now, location_id, m.user_id, now, visit_uuid),
        )
        return VisitRef(
            int(cur.lastrowid), visit_uuid, patient.patient_id, patient.uuid, location_id, int(vt["visit_type_id"])
        )

    def start_visit(self, patient: PatientRef, visit_type: str = "OPD", location: str | None = None) -> VisitRef:
        """A new visit at the visit location of ``location`` (default: the login location)."""
        with self._tx() as (cur, committed):
            loc = self._visit_location(cur, self._location(cur, location))
            visit = self._insert_visit(cur, patient, visit_type, loc, self._now())
        return replace(visit, committed_at=committed.at or 0.0)

    def close_visit(self, visit: VisitRef) -> float:
        """UPDATE ``visit.date_stopped`` (the visit-close trigger). Returns the commit time."""
        with self._tx() as (cur, committed):
            m, now = self.meta(cur), self._now()
            cur.execute(
                "UPDATE visit SET date_stopped = %s, changed_by = %s, date_changed = %s WHERE visit_id = %s",
                (now, m.user_id, now, visit.visit_id),
            )
        return committed.at or 0.0

    # ------------------------------------------------------------------ the Save
    @contextmanager
    def save(
        self, target: VisitRef | PatientRef | EncounterRef, *, location: str | None = None, visit_type: str = "OPD"
    ) -> Iterator[Save]:
        """One Bahmni Save (one transaction) into the Consultation encounter of ``target``.

        * :class:`EncounterRef`: that encounter (the client passes its uuid, e.g. a past edit);
        * :class:`VisitRef`: the session matcher: reuse this provider's Consultation encounter of
          the visit if it was created or changed within the session duration (60 min) today,
          else create one;
        * :class:`PatientRef`: like emrapi's ``findOrCreateVisit``: the patient's active visit at
          the visit location, else a new visit IN THIS transaction.
        """
        with self._tx() as (cur, committed):
            m, now = self.meta(cur), self._now()
            login = self._location(cur, location)
            visit_created = False
            if isinstance(target, EncounterRef):
                visit = target.visit
                enc: tuple[int, str] | None = (target.encounter_id, target.uuid)
            else:
                if isinstance(target, PatientRef):
                    visit_loc = self._visit_location(cur, login)
                    found = self._active_visit(cur, target, visit_loc)
                    if found is None:
                        found = self._insert_visit(cur, target, visit_type, visit_loc, now)
                        visit_created = True
                    visit = found
                else:
                    visit = target
                enc = self._match_encounter(cur, m, visit, now)
            created = enc is None
            if enc is None:
                enc = self._create_encounter(cur, m, visit, login, now)
            session = Save(cur, m, now, visit, enc[0], enc[1], login, created, visit_created)
            yield session
            session._finish()
        session._committed_at = committed.at

    def _active_visit(self, cur: DictCursor, patient: PatientRef, visit_location: int) -> VisitRef | None:
        cur.execute(
            "SELECT visit_id, uuid, location_id, visit_type_id FROM visit WHERE patient_id = %s AND voided = 0"
            " AND date_stopped IS NULL AND location_id = %s ORDER BY date_started DESC LIMIT 1",
            (patient.patient_id, visit_location),
        )
        row = cur.fetchone()
        if row is None:
            return None
        return VisitRef(
            int(row["visit_id"]),
            str(row["uuid"]),
            patient.patient_id,
            patient.uuid,
            int(row["location_id"]),
            int(row["visit_type_id"]),
        )

    @staticmethod
    def _match_encounter(cur: DictCursor, m: md.BahmniMeta, visit: VisitRef, now: datetime) -> tuple[int, str] | None:
        """``EncounterSessionMatcher``: same patient, type, provider, visit; within the session."""
        cur.execute(
            "SELECT e.encounter_id, e.uuid FROM encounter e JOIN encounter_provider ep"
            " ON ep.encounter_id = e.encounter_id AND ep.voided = 0 AND ep.provider_id = %s"
            " WHERE e.visit_id = %s AND e.patient_id = %s AND e.encounter_type = %s AND e.voided = 0"
            " AND COALESCE(e.date_changed, e.date_created) >= %s AND DATE(e.encounter_datetime) = DATE(%s)"
            " ORDER BY e.encounter_datetime DESC, e.encounter_id DESC LIMIT 1",
            (
                m.provider_id,
                visit.visit_id,
                visit.patient_id,
                m.consultation_type_id,
                now - timedelta(minutes=m.session_minutes),
                now,
            ),
        )
        row = cur.fetchone()
        return None if row is None else (int(row["encounter_id"]), str(row["uuid"]))

    @staticmethod
    def _create_encounter(
        cur: DictCursor, m: md.BahmniMeta, visit: VisitRef, location_id: int, now: datetime
    ) -> tuple[int, str]:
        enc_uuid = _new_uuid()
        cur.execute(
            "INSERT INTO encounter (encounter_type, patient_id, location_id, encounter_datetime, creator, date_created,"
            " voided, visit_id, uuid) VALUES (%s, %s, %s, %s, %s, %s, 0, %s, %s)",
            (m.consultation_type_id, visit.patient_id, location_id, now, m.user_id, now, visit.visit_id, enc_uuid),
        )
        enc_id = int(cur.lastrowid)
        cur.execute(
            "INSERT INTO encounter_provider (encounter_id, provider_id, encounter_role_id, creator, date_created,"
            " voided, uuid) VALUES (%s, %s, %s, %s, %s, 0, %s)",
            (enc_id, m.provider_id, m.encounter_role_id, m.user_id, now, _new_uuid()),
        )
        return enc_id, enc_uuid

    # ------------------------------------------------------------------ one-call Saves
    def save_consultation(
        self,
        visit: VisitRef | PatientRef,
        *,
        diagnoses: Sequence[Dx] = (),
        drugs: Sequence[Drug] = (),
        labs: Iterable[str] = (),
        radiology: Iterable[str] = (),
        procedures_obs: Iterable[str] = (),
        procedures: Iterable[str] = (),
        encounter: EncounterRef | None = None,
    ) -> EncounterRef:
        """One consultation Save: diagnoses, drug/lab/radiology/procedure orders, procedure obs."""
        with self.save(encounter or visit) as s:
            for dx in diagnoses:
                s.add_diagnosis(dx)
            for proc in procedures_obs:
                s.add_procedure_obs(proc)
            for drug in drugs:
                s.add_drug(drug)
            for lab in labs:
                s.add_order("lab", lab)
            for rad in radiology:
                s.add_order("radiology", rad)
            for proc in procedures:
                s.add_order("procedure", proc)
        return s.result

    def upload_document(
        self, visit: VisitRef, document: str, path: str, *, encounter_type: str = "Patient Document"
    ) -> ObsRef:
        """What Bahmni's document upload writes (VisitDocumentController): the file is already in
        ``/home/bahmni/document_images`` at ``path``; one transaction adds an encounter of
        ``encounter_type`` to the visit with an obs group of the document's concept (``document``:
        uuid or name, e.g. ``Discharge Summary``) whose member obs ``Document`` holds the path."""
        with self._tx() as (cur, _):
            m, now = self.meta(cur), self._now()
            concept_ids = {}
            for key in (document, "Document"):
                cur.execute(
                    "SELECT c.concept_id FROM concept c JOIN concept_name cn ON cn.concept_id = c.concept_id"
                    " AND cn.concept_name_type = 'FULLY_SPECIFIED' WHERE c.uuid = %s OR cn.name = %s LIMIT 1",
                    (key, key),
                )
                row = cur.fetchone()
                if row is None:
                    raise LookupError(f"concept {key!r} not found")
                concept_ids[key] = int(row["concept_id"])
            cur.execute("SELECT encounter_type_id FROM encounter_type WHERE name = %s", (encounter_type,))
            type_row = cur.fetchone()
            if type_row is None:
                raise LookupError(f"encounter type {encounter_type!r} not found")
            enc_uuid = _new_uuid()
            location = self._location(cur, None)
            row_values = [type_row["encounter_type_id"], visit.patient_id, location, now, m.user_id, now]
            cur.execute(
                "INSERT INTO encounter (encounter_type, patient_id, location_id, encounter_datetime, creator,"
                " date_created, voided, visit_id, uuid) VALUES (%s, %s, %s, %s, %s, %s, 0, %s, %s)",
                (*row_values, visit.visit_id, enc_uuid),
            )
            enc_id = int(cur.lastrowid)
            session = Save(cur, m, now, visit, enc_id, enc_uuid, location, created=True)
            group = session._insert_obs(concept_ids[document])
            member = session._insert_obs(concept_ids["Document"], group=group.obs_id, value_text=path)
            _event_record(cur, "Encounter", enc_uuid, now)
        return member

    def _encounter_of(self, encounter_id: int) -> EncounterRef:
        with self._tx() as (cur, _):
            cur.execute(
                "SELECT e.uuid, v.visit_id, v.uuid AS visit_uuid, v.location_id, v.visit_type_id,"
                " p.uuid AS patient_uuid, e.patient_id FROM encounter e JOIN visit v ON v.visit_id = e.visit_id"
                " JOIN person p ON p.person_id = e.patient_id WHERE e.encounter_id = %s",
                (encounter_id,),
            )
            row = cur.fetchone()
        if row is None:
            raise LookupError(f"encounter {encounter_id} not found")
        visit = VisitRef(
            int(row["visit_id"]),
            str(row["visit_uuid"]),
            int(row["patient_id"]),
            str(row["patient_uuid"]),
            int(row["location_id"]),
            int(row["visit_type_id"]),
        )
        return EncounterRef(encounter_id, str(row["uuid"]), visit, created=False)

    def edit_diagnosis_certainty(self, dx: DxRef, certainty: Certainty) -> EncounterRef:
        """A Save into the diagnosis' encounter that re-versions its certainty member."""
        with self.save(self._encounter_of(dx.encounter_id)) as s:
            s.edit_diagnosis_certainty(dx, certainty)
        return s.result

    def void_diagnosis(self, dx: DxRef) -> EncounterRef:
        """A Save into the diagnosis' encounter that deletes it (group + members voided)."""
        with self.save(self._encounter_of(dx.encounter_id)) as s:
            s.void_diagnosis(dx)
        return s.result

    def revise_drug(
        self, order: OrderRef, new_quantity: Decimal | int | float, in_encounter: EncounterRef | VisitRef | None = None
    ) -> EncounterRef:
        """A Save that REVISEs a drug order (in its own encounter unless ``in_encounter``)."""
        with self.save(in_encounter or self._encounter_of(order.encounter_id)) as s:
            s.revise_drug(order, new_quantity)
        return s.result

    def discontinue_order(self, order: OrderRef, in_encounter: EncounterRef | VisitRef | None = None) -> EncounterRef:
        """A Save that DISCONTINUEs an order (in its own encounter unless ``in_encounter``)."""
        with self.save(in_encounter or self._encounter_of(order.encounter_id)) as s:
            s.discontinue_order(order)
        return s.result

    def revise_diagnosis_in_later_encounter(
        self, original: DxRef, later: EncounterRef | VisitRef, dx: Dx
    ) -> EncounterRef:
        """A Save into a later encounter that revises ``original``; the transaction also writes
        the re-versioned Revised=True member into the ORIGINAL encounter (§3.3)."""
        with self.save(later) as s:
            s.revise_diagnosis(original, dx)
        return s.result

    def add_procedure_order(self, target: VisitRef | EncounterRef, concept: str) -> EncounterRef:
        """A Bahmni 1.0 ``Procedure Order`` (the order type is created first if missing)."""
        self.ensure_procedure_order_type()
        with self.save(target) as s:
            s.add_order("procedure", concept)
        return s.result

    def ensure_procedure_order_type(self) -> int:
        """Create the ``Procedure Order`` type (metadata, its own transaction) if missing."""
        with self._tx() as (cur, _):
            return ensure_procedure_order_type(cur, self.meta(cur).user_id, self._now())

    # ------------------------------------------------------------------ not Saves
    def void_encounter(self, encounter: EncounterRef, reason: str = "Deleted") -> float:
        """``DELETE /bahmniencounter/{uuid}``: obs, orders, diagnoses, providers, then the encounter
        voided with the same user/date/reason. No ``event_records`` row. Returns the commit time."""
        with self._tx() as (cur, committed):
            m, now = self.meta(cur), self._now()
            void = (m.user_id, now, reason, encounter.encounter_id)
            cur.execute(
                "UPDATE obs SET voided = 1, voided_by = %s, date_voided = %s, void_reason = %s"
                " WHERE encounter_id = %s AND voided = 0",
                void,
            )
            cur.execute(
                "UPDATE orders SET voided = 1, voided_by = %s, date_voided = %s, void_reason = %s"
                " WHERE encounter_id = %s AND voided = 0",
                void,
            )
            for table in ("encounter_diagnosis", "encounter_provider"):
                cur.execute(
                    f"UPDATE {table} SET voided = 1, voided_by = %s, date_voided = %s, void_reason = %s,"  # noqa: S608
                    " changed_by = %s, date_changed = %s WHERE encounter_id = %s AND voided = 0",
                    (m.user_id, now, reason, m.user_id, now, encounter.encounter_id),
                )
            cur.execute(
                "UPDATE encounter SET voided = 1, voided_by = %s, date_voided = %s, void_reason = %s,"
                " changed_by = %s, date_changed = %s WHERE encounter_id = %s",
                (m.user_id, now, reason, m.user_id, now, encounter.encounter_id),
            )
        return committed.at or 0.0

    def add_encounter_diagnosis(
        self,
        encounter: EncounterRef,
        concept: str | None = None,
        *,
        text: str | None = None,
        certainty: Certainty = "CONFIRMED",
    ) -> DiagnosisRowRef:
        """FHIR-path diagnosis: one ``encounter_diagnosis`` row, rank 1 (``rank`` or ``dx_rank``)."""
        if (concept is None) == (text is None):
            raise ValueError("give exactly one of concept (uuid) or text")
        with self._tx() as (cur, committed):
            m, now = self.meta(cur), self._now()
            coded = None
            if concept is not None:
                coded = md.concept_id(cur, concept)
                if coded is None:
                    raise LookupError(f"diagnosis concept {concept} not found")
            cur.execute("SHOW COLUMNS FROM encounter_diagnosis LIKE 'dx_rank'")
            rank_col = "dx_rank" if cur.fetchone() is not None else "`rank`"
            row_uuid = _new_uuid()
            cur.execute(
                f"INSERT INTO encounter_diagnosis (diagnosis_coded, diagnosis_non_coded, encounter_id, patient_id,"  # noqa: S608
                f" certainty, {rank_col}, uuid, creator, date_created, voided)"
                " VALUES (%s, %s, %s, %s, %s, 1, %s, %s, %s, 0)",
                (coded, text, encounter.encounter_id, encounter.visit.patient_id, certainty, row_uuid, m.user_id, now),
            )
            diagnosis_id = int(cur.lastrowid)
        return DiagnosisRowRef(diagnosis_id, row_uuid, encounter.encounter_id, committed.at or 0.0)
