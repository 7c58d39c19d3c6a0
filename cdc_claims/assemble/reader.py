"""Read one claimable unit (an encounter, or a whole visit) from the OpenMRS database, as it is *now*.

:class:`OpenMrsReader` is the only place that talks to OpenMRS. It runs a handful of batched
``SELECT`` statements (SQL text in :mod:`cdc_claims.assemble.queries`) inside one read-only,
consistent-snapshot transaction and returns a frozen :class:`~cdc_claims.assemble.model.ClaimContext`.
It never selects patient names; rows are keyed by uuid.

What "current" means (``shared/openmrs/DATA_MODEL.md`` §3-§5):

* diagnoses from both models: non-voided ``Visit Diagnoses`` obs groups with their non-voided
  members, and non-voided ``encounter_diagnosis`` rows (rank column ``rank`` on OpenMRS 2.4,
  ``dx_rank`` on 2.5+, detected once). Which of those rows count (revised and ruled-out groups
  do not), their certainty and rank, are pure rules of :mod:`cdc_claims.assemble.selection`:
  this module runs the SQL and hands the rows over;
* orders that are still in force: not voided, not a DISCONTINUE row, no non-voided child through
  ``previous_order_id`` (the child may sit in a later encounter of the visit);
* procedures recorded as ``Operative Notes, Procedure`` obs (coded answers);
* consultation lines derived from the encounter type (and visit type) by configuration;
* documents filed in the visit under the concepts the mapping attaches (where the file is, not
  its content: :mod:`cdc_claims.assemble.documents` reads the bytes when the Claim is rendered).

Metadata (concept ids of the diagnosis concepts, ICD source, insurance number type, order types,
rank column) is resolved by uuid or name on first use and cached for the reader's lifetime.
A voided encounter or visit comes back with ``voided=True`` and no content; the mapping holds it.
Database errors become :class:`~cdc_claims.errors.SourceUnavailable` (retriable).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pymysql
import pymysql.cursors

from cdc_claims.assemble import queries as q
from cdc_claims.assemble.model import (
    BillableLine,
    ClaimContext,
    Diagnosis,
    DocumentRef,
    Encounter,
    LineKind,
    Location,
    Patient,
    Provider,
    Visit,
)
from cdc_claims.assemble.selection import (
    ConsultationRuleLike,
    DiagnosisObsConcepts,
    RecordedDiagnosis,
    attach_icd,
    derive_consultations,
    encounter_diagnoses,
    obs_diagnoses,
    pick_icd_codes,
)
from cdc_claims.assemble.vocabulary import DEFAULT_ICD_SOURCE_NAMES, OPERATIVE_NOTES_PROCEDURE
from cdc_claims.db import ConnFactory, placeholders
from cdc_claims.errors import ConfigError, NotClaimable, SourceUnavailable
from cdc_claims.settings import UnitKind

Row = dict[str, Any]

_MAX_LOCATION_DEPTH = 10


@dataclass(frozen=True)
class DiagnosisConcepts:
    """The emrapi/Bahmni diagnosis concepts, by uuid (DATA_MODEL §3.1). Resolved to ids per database."""

    group: str = "81c5840e-3f10-11e4-adec-0800271c1b75"  # Visit Diagnoses
    coded: str = "81c7149b-3f10-11e4-adec-0800271c1b75"  # Coded Diagnosis
    non_coded: str = "81c66271-3f10-11e4-adec-0800271c1b75"  # Non-coded Diagnosis
    certainty: str = "81c7d52c-3f10-11e4-adec-0800271c1b75"  # Diagnosis Certainty
    confirmed: str = "81c90d57-3f10-11e4-adec-0800271c1b75"  # Confirmed
    order: str = "81c9da5f-3f10-11e4-adec-0800271c1b75"  # Diagnosis order
    primary: str = "81cafebe-3f10-11e4-adec-0800271c1b75"  # Primary
    status: str = "82389c0c-3f10-11e4-adec-0800271c1b75"  # Bahmni Diagnosis Status
    ruled_out: str = "823051c4-3f10-11e4-adec-0800271c1b75"  # Ruled Out Diagnosis
    revised: str = "823a4d34-3f10-11e4-adec-0800271c1b75"  # Bahmni Diagnosis Revised


@dataclass(frozen=True)
class ReaderConfig:
    """What the reader needs from the mapping file.

    Plain values, so the reader imports nothing from :mod:`cdc_claims.mapping`: the mapping builds
    one with :func:`cdc_claims.mapping.reading.reader_config`. The defaults are Bahmni's own.
    """

    insurance_identifier_type: str | None = None  # uuid or name
    insurance_attribute_type: str | None = None  # uuid or name
    icd_source_uuid: str | None = None
    icd_source_names: tuple[str, ...] = DEFAULT_ICD_SOURCE_NAMES
    lab_order_types: tuple[str, ...] = ("Lab Order",)
    radiology_order_types: tuple[str, ...] = ("Radiology Order",)
    procedure_order_types: tuple[str, ...] = ("Procedure Order",)
    procedure_obs_concepts: tuple[str, ...] = (OPERATIVE_NOTES_PROCEDURE,)
    consultations: tuple[ConsultationRuleLike, ...] = ()
    term_sources: tuple[str, ...] = ()  # concept source names whose terms lines carry (concept_terms rules)
    #: concepts (uuid or name) documents are filed under; empty: no documents are read
    document_concepts: tuple[str, ...] = ()
    document_concept: str = "Document"  # the member obs holding a Bahmni upload's file path
    diagnosis_concepts: DiagnosisConcepts = field(default_factory=DiagnosisConcepts)


@dataclass(frozen=True)
class PatientUnits:
    """Non-voided encounters and visits of one patient (e.g. to re-examine after an insurance number appears)."""

    encounter_ids: tuple[int, ...]
    visit_ids: tuple[int, ...]


@dataclass(frozen=True)
class _Meta:
    dx_group: int | None  # concept id of Visit Diagnoses (None: no obs diagnoses in this database)
    dx_concepts: DiagnosisObsConcepts
    icd_sources: tuple[int, ...]
    insurance_type_id: int
    rank_column: str | None  # None: no encounter_diagnosis table
    order_kinds: dict[int, LineKind]
    procedure_concepts: tuple[int, ...]
    term_sources: dict[int, str]
    consultation_concepts: dict[str, int]  # consultation rule concept uuid -> concept id
    #: concept id -> (uuid, name) of each configured document concept
    document_concepts: dict[int, tuple[str, str]] = field(default_factory=dict)
    document_member: int | None = None  # concept id of Bahmni's "Document"


@dataclass(frozen=True)
class Candidate:
    """A unit a backfill may claim: its id, uuid and time (encounter datetime or visit start)."""

    id: int
    uuid: str
    at: datetime


class OpenMrsReader:
    """Reads :class:`ClaimContext` snapshots. ``conn_factory`` returns a new SELECT-only connection."""

    def __init__(self, conn_factory: ConnFactory, config: ReaderConfig) -> None:
        self._conn_factory = conn_factory
        self._config = config
        self._meta_cache: _Meta | None = None

    # ---- public API --------------------------------------------------------------------

    def resolve(self) -> None:
        """Resolve and cache the metadata now (start-up check); raises ConfigError if missing."""
        with self._cursor() as cur:
            self._meta(cur)

    def read_encounter(self, encounter: int | str) -> ClaimContext:
        """The encounter (by id or uuid) with its visit, patient, current diagnoses and lines."""
        with self._cursor() as cur:
            meta = self._meta(cur)
            by_uuid = isinstance(encounter, str)
            enc = _one(cur, q.ENCOUNTER_BY_UUID if by_uuid else q.ENCOUNTER_BY_ID, (encounter,))
            if enc is None:
                raise NotClaimable("voided", f"encounter {encounter} not found (purged?)")
            if enc["visit_id"] is None:
                raise NotClaimable("no_billable_lines", f"encounter {enc['uuid']} has no visit")
            visit = _one(cur, q.VISIT_BY_ID, (enc["visit_id"],))
            if visit is None:  # pragma: no cover - foreign key
                raise NotClaimable("voided", f"visit of encounter {enc['uuid']} not found")
            voided = bool(enc["voided"]) or bool(visit["voided"])
            return self._build(
                cur, meta, unit_kind="encounter", unit_uuid=enc["uuid"], vrow=visit, erows=[enc], voided=voided
            )

    def read_visit(self, visit: int | str) -> ClaimContext:
        """The visit (by id or uuid) with all its non-voided encounters and their content."""
        with self._cursor() as cur:
            meta = self._meta(cur)
            by_uuid = isinstance(visit, str)
            vrow = _one(cur, q.VISIT_BY_UUID if by_uuid else q.VISIT_BY_ID, (visit,))
            if vrow is None:
                raise NotClaimable("voided", f"visit {visit} not found (purged?)")
            encs = _all(cur, q.ENCOUNTERS_OF_VISIT, (vrow["visit_id"],))
            active = [e for e in encs if not e["voided"]]
            voided = bool(vrow["voided"]) or (bool(encs) and not active)
            return self._build(
                cur, meta, unit_kind="visit", unit_uuid=vrow["uuid"], vrow=vrow, erows=active or encs, voided=voided
            )

    def read(self, kind: UnitKind, unit_id: int) -> ClaimContext:
        """The claim context of a settled unit (the claim service's ``Reader`` port)."""
        return self.read_visit(unit_id) if kind == "visit" else self.read_encounter(unit_id)

    def unit_id(self, kind: UnitKind, uuid: str) -> int | None:
        """The integer id of an encounter or visit by uuid (None when it is gone)."""
        with self._cursor() as cur:
            row = _one(cur, q.VISIT_ID_BY_UUID if kind == "visit" else q.ENCOUNTER_ID_BY_UUID, (uuid,))
        return int(row["id"]) if row else None

    def person_uuids(self, person_ids: Iterable[int]) -> dict[int, str]:
        """person_id -> uuid (patients are persons)."""
        ids = sorted(set(person_ids))
        if not ids:
            return {}
        with self._cursor() as cur:
            rows = _all(cur, q.PERSON_UUIDS.format(ids=placeholders(len(ids))), ids)
        return {int(r["person_id"]): str(r["uuid"]) for r in rows}

    def encounter_ids(self, uuids: Iterable[str]) -> dict[str, int]:
        """encounter uuid -> encounter_id (missing ones are left out)."""
        wanted = sorted(set(uuids))
        if not wanted:
            return {}
        with self._cursor() as cur:
            rows = _all(cur, q.ENCOUNTER_IDS_BY_UUID.format(ids=placeholders(len(wanted))), wanted)
        return {str(r["uuid"]): int(r["encounter_id"]) for r in rows}

    def encounter_visit(self, encounter_ids: Iterable[int]) -> dict[int, int]:
        """encounter_id -> visit_id (encounters without a visit are left out)."""
        ids = sorted(set(encounter_ids))
        if not ids:
            return {}
        with self._cursor() as cur:
            rows = _all(cur, q.ENCOUNTER_VISITS.format(ids=placeholders(len(ids))), ids)
        return {int(r["encounter_id"]): int(r["visit_id"]) for r in rows}

    def order_encounters(self, order_ids: Iterable[int]) -> dict[int, int]:
        """order_id -> encounter_id (for ``drug_order`` change rows, which carry only the order id)."""
        ids = sorted(set(order_ids))
        if not ids:
            return {}
        with self._cursor() as cur:
            rows = _all(cur, q.ORDER_ENCOUNTERS.format(ids=placeholders(len(ids))), ids)
        return {int(r["order_id"]): int(r["encounter_id"]) for r in rows}

    def patient_units(self, patient_id: int) -> PatientUnits:
        with self._cursor() as cur:
            encs = _all(cur, q.PATIENT_ENCOUNTERS, (patient_id,))
            visits = _all(cur, q.PATIENT_VISITS, (patient_id,))
        return PatientUnits(tuple(int(r["encounter_id"]) for r in encs), tuple(int(r["visit_id"]) for r in visits))

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
        """One page of the claimable units of ``[since, until)`` (naive UTC), oldest first.

        Encounter mode: non-voided encounters with a (non-voided) visit; visit mode: closed,
        non-voided visits. ``facilities`` restricts to visits at those locations (uuid or name).
        ``after``: the last candidate of the previous page (keyset pagination).
        """
        sql, args = self._backfill_sql(
            q.BACKFILL_VISITS if kind == "visit" else q.BACKFILL_ENCOUNTERS, since, until, facilities
        )
        at, last = (after.at, after.id) if after is not None else (since, 0)
        with self._cursor() as cur:
            found = _all(cur, sql, [*args, at, at, last, max(1, int(limit))])
        return [Candidate(int(r["id"]), str(r["uuid"]), r["at"]) for r in found]

    def backfill_count(
        self, kind: UnitKind, *, since: datetime, until: datetime, facilities: Sequence[str] = ()
    ) -> int:
        """How many units :meth:`backfill_candidates` would list in all (for progress and dry runs)."""
        sql, args = self._backfill_sql(
            q.BACKFILL_VISITS_COUNT if kind == "visit" else q.BACKFILL_ENCOUNTERS_COUNT, since, until, facilities
        )
        with self._cursor() as cur:
            row = _one(cur, sql, args)
        return int(row["n"]) if row else 0

    @staticmethod
    def _backfill_sql(
        template: str, since: datetime, until: datetime, facilities: Sequence[str]
    ) -> tuple[str, list[Any]]:
        keys = sorted(set(facilities))
        if not keys:
            return template.format(facility=""), [since, until]
        clause = q.BACKFILL_FACILITY.format(keys=placeholders(len(keys)))
        return template.format(facility=clause), [since, until, *keys, *keys]

    # ---- connection --------------------------------------------------------------------

    @contextmanager
    def _cursor(self) -> Iterator[pymysql.cursors.DictCursor]:
        conn: pymysql.connections.Connection[Any] | None = None
        try:
            conn = self._conn_factory()
            with conn.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                try:
                    yield cur
                finally:
                    conn.rollback()
        except pymysql.MySQLError as err:
            code = err.args[0] if err.args else "?"
            raise SourceUnavailable(f"OpenMRS database: {type(err).__name__} ({code})") from err
        finally:
            if conn is not None:
                with suppress(pymysql.MySQLError):
                    conn.close()

    # ---- metadata ----------------------------------------------------------------------

    def _meta(self, cur: pymysql.cursors.DictCursor) -> _Meta:
        if self._meta_cache is None:
            self._meta_cache = self._resolve_meta(cur)
        return self._meta_cache

    def _resolve_meta(self, cur: pymysql.cursors.DictCursor) -> _Meta:
        cfg = self._config
        problems: list[str] = []
        dxc = cfg.diagnosis_concepts
        names = [n for n in dxc.__dataclass_fields__]
        consult = [rule.concept for rule in cfg.consultations]
        uuids = [getattr(dxc, n) for n in names] + list(cfg.procedure_obs_concepts) + consult
        found = {
            r["uuid"]: int(r["concept_id"])
            for r in _all(cur, q.CONCEPT_IDS_BY_UUID.format(ids=placeholders(len(uuids))), uuids)
        }
        dx = {n: found.get(getattr(dxc, n)) for n in names}
        consultation_concepts = {u: found[u] for u in consult if u in found}
        problems.extend(f"consultation concept {u} not found" for u in consult if u not in found)

        true_id: int | None = None
        gp = _one(cur, q.GLOBAL_PROPERTY, ("concept.true",))
        value = str(gp["property_value"]).strip() if gp and gp["property_value"] is not None else ""
        if value.isdigit():
            true_id = int(value)
        elif value:
            row = _one(cur, q.CONCEPT_IDS_BY_UUID.format(ids="%s"), (value,))
            true_id = int(row["concept_id"]) if row else None

        src_names = list(cfg.icd_source_names) or [""]
        src_rows = _all(
            cur,
            q.CONCEPT_SOURCE_IDS.format(names=placeholders(len(src_names))),
            [cfg.icd_source_uuid or "", *src_names],
        )
        icd_sources = tuple(sorted(int(r["concept_source_id"]) for r in src_rows))
        if not icd_sources:
            problems.append(f"ICD-10 concept source not found (uuid {cfg.icd_source_uuid}, names {src_names})")

        insurance_type_id = 0
        if cfg.insurance_identifier_type is not None:
            key = cfg.insurance_identifier_type
            row = _one(cur, q.PATIENT_IDENTIFIER_TYPE, (key, key))
        else:
            key = cfg.insurance_attribute_type or ""
            row = _one(cur, q.PERSON_ATTRIBUTE_TYPE, (key, key))
        if row is None:
            problems.append(f"insurance number type {key!r} not found")
        else:
            insurance_type_id = int(next(iter(row.values())))

        rank_column = _rank_column(cur)
        order_kinds = read_order_kinds(cur, cfg)

        procedure_concepts = tuple(found[u] for u in cfg.procedure_obs_concepts if u in found)

        term_sources: dict[int, str] = {}
        if cfg.term_sources:
            rows = _all(
                cur, q.CONCEPT_SOURCE_IDS_BY_NAME.format(names=placeholders(len(cfg.term_sources))), cfg.term_sources
            )
            term_sources = {int(r["concept_source_id"]): str(r["name"]) for r in rows}
            missing = sorted(set(cfg.term_sources) - set(term_sources.values()))
            if missing:
                problems.append(
                    f"concept source(s) named in concept_terms or reference_terms not found: {', '.join(missing)}"
                )

        document_concepts, document_member = _document_concepts(cur, cfg, problems)

        if problems:
            raise ConfigError("mapping does not match the OpenMRS database: " + "; ".join(problems))
        dx_concepts = DiagnosisObsConcepts(
            coded=dx["coded"],
            non_coded=dx["non_coded"],
            certainty=dx["certainty"],
            confirmed=dx["confirmed"],
            order=dx["order"],
            primary=dx["primary"],
            status=dx["status"],
            ruled_out=dx["ruled_out"],
            revised=dx["revised"],
            true=true_id,
        )
        return _Meta(
            dx["group"],
            dx_concepts,
            icd_sources,
            insurance_type_id,
            rank_column,
            order_kinds,
            procedure_concepts,
            term_sources,
            consultation_concepts,
            document_concepts,
            document_member,
        )

    # ---- assembling --------------------------------------------------------------------

    def _build(
        self,
        cur: pymysql.cursors.DictCursor,
        meta: _Meta,
        *,
        unit_kind: UnitKind,
        unit_uuid: str,
        vrow: Row,
        erows: Sequence[Row],
        voided: bool,
    ) -> ClaimContext:
        patient = self._patient(cur, meta, int(vrow["patient_id"]))
        loc_ids = {int(r["location_id"]) for r in erows if r["location_id"] is not None}
        if vrow["location_id"] is not None:
            loc_ids.add(int(vrow["location_id"]))
        locations = read_locations(cur, loc_ids)
        enc_ids = [int(r["encounter_id"]) for r in erows]
        providers: dict[int, list[Provider]] = defaultdict(list)
        if enc_ids:
            for r in _all(cur, q.ENCOUNTER_PROVIDERS.format(ids=placeholders(len(enc_ids))), enc_ids):
                providers[int(r["encounter_id"])].append(Provider(int(r["provider_id"]), str(r["uuid"])))
        visit = Visit(
            visit_id=int(vrow["visit_id"]),
            uuid=str(vrow["uuid"]),
            type_uuid=str(vrow["type_uuid"]),
            type_name=str(vrow["type_name"]),
            date_started=vrow["date_started"],
            date_stopped=vrow["date_stopped"],
            voided=bool(vrow["voided"]),
            location=locations.get(vrow["location_id"]) if vrow["location_id"] is not None else None,
        )
        encounters = tuple(
            Encounter(
                encounter_id=int(r["encounter_id"]),
                uuid=str(r["uuid"]),
                type_uuid=str(r["type_uuid"]),
                type_name=str(r["type_name"]),
                encounter_datetime=r["encounter_datetime"],
                voided=bool(r["voided"]) or voided,
                location=locations.get(r["location_id"]) if r["location_id"] is not None else None,
                providers=tuple(providers.get(int(r["encounter_id"]), ())),
            )
            for r in erows
        )
        diagnoses: tuple[Diagnosis, ...] = ()
        lines: tuple[BillableLine, ...] = ()
        live = [e for e in encounters if not e.voided]
        if not voided and live:
            uuids = {e.encounter_id: e.uuid for e in live}
            diagnoses = self._diagnoses(cur, meta, uuids)
            lines = self._lines(cur, meta, uuids) + derive_consultations(
                live, visit, self._config.consultations, meta.consultation_concepts
            )
        documents = self._documents(cur, meta, visit.visit_id) if not voided and live else ()
        return ClaimContext(
            unit_kind=unit_kind,
            unit_uuid=unit_uuid,
            patient=patient,
            visit=visit,
            encounters=encounters,
            diagnoses=diagnoses,
            lines=lines,
            read_at=datetime.now(UTC),
            documents=documents,
        )

    @staticmethod
    def _documents(cur: pymysql.cursors.DictCursor, meta: _Meta, visit_id: int) -> tuple[DocumentRef, ...]:
        """The visit's documents of the configured concepts: Bahmni saves an upload in an
        encounter of its own, so an encounter's claim looks for them in its whole visit."""
        if not meta.document_concepts:
            return ()
        ids = list(meta.document_concepts)
        marks = placeholders(len(ids))
        member = meta.document_member if meta.document_member is not None else -1
        rows = _all(cur, q.DOCUMENT_OBS.format(ids=marks), [visit_id, member, *ids, visit_id, *ids])
        out: list[DocumentRef] = []
        for r in rows:
            uuid, name = meta.document_concepts[int(r["concept_id"])]
            path = str(r["path"])
            if r["store"] == "complex_obs":  # "title|file name" (OpenMRS's complex obs handlers)
                path = path.rsplit("|", 1)[-1]
            out.append(
                DocumentRef(
                    obs_uuid=str(r["obs_uuid"]),
                    encounter_uuid=str(r["encounter_uuid"]),
                    concept_uuid=uuid,
                    concept_name=name,
                    store="complex_obs" if r["store"] == "complex_obs" else "documents",
                    path=path.strip(),
                    recorded=r["recorded"],
                )
            )
        return tuple(out)

    def _patient(self, cur: pymysql.cursors.DictCursor, meta: _Meta, patient_id: int) -> Patient:
        row = _one(cur, q.PATIENT, (patient_id,))
        if row is None:  # pragma: no cover - foreign key
            raise NotClaimable("voided", f"patient {patient_id} not found")
        sql = q.INSURANCE_FROM_IDENTIFIER if self._config.insurance_identifier_type else q.INSURANCE_FROM_ATTRIBUTE
        ins = _one(cur, sql, (patient_id, meta.insurance_type_id))
        number = str(next(iter(ins.values()))).strip() if ins else ""
        return Patient(
            patient_id=patient_id,
            uuid=str(row["uuid"]),
            gender=row["gender"],
            birthdate=row["birthdate"],
            insurance_number=number or None,
        )

    def _diagnoses(
        self, cur: pymysql.cursors.DictCursor, meta: _Meta, enc_uuids: dict[int, str]
    ) -> tuple[Diagnosis, ...]:
        """Fetch the rows of both diagnosis models; selection decides which of them count."""
        ids = list(enc_uuids)
        recorded: list[RecordedDiagnosis] = []
        if meta.dx_group is not None:
            sql = q.DIAGNOSIS_OBS.format(ids=placeholders(len(ids)))
            recorded += obs_diagnoses(_all(cur, sql, [*ids, meta.dx_group]), meta.dx_concepts)
        if meta.rank_column is not None:
            sql = q.ENCOUNTER_DIAGNOSES.format(rank=meta.rank_column, ids=placeholders(len(ids)))
            recorded += encounter_diagnoses(_all(cur, sql, ids))
        concept_ids = sorted({d.concept_id for d in recorded if d.concept_id is not None})
        return attach_icd(recorded, enc_uuids, pick_icd_codes(self._icd_rows(cur, meta, concept_ids)))

    @staticmethod
    def _icd_rows(cur: pymysql.cursors.DictCursor, meta: _Meta, concept_ids: list[int]) -> list[Row]:
        """Every reference map of the concepts, ICD terms of the configured source(s), SAME-AS first."""
        if not concept_ids:
            return []
        sql = q.DIAGNOSIS_CONCEPTS.format(
            sources=placeholders(len(meta.icd_sources)), ids=placeholders(len(concept_ids))
        )
        return _all(cur, sql, [*meta.icd_sources, *concept_ids])

    @staticmethod
    def _chain_roots(cur: pymysql.cursors.DictCursor, orders: Sequence[Row]) -> dict[int, str]:
        """order_id -> uuid of the first order of its revision chain (for revised orders only)."""
        pending = {int(r["order_id"]): int(r["previous_order_id"]) for r in orders if r["previous_order_id"]}
        roots: dict[int, str] = {}
        for _depth in range(50):  # chains are a few edits long; a cycle must not loop forever
            if not pending:
                break
            parents = sorted(set(pending.values()))
            found = {
                int(r["order_id"]): r
                for r in _all(cur, q.ORDER_PARENTS.format(ids=placeholders(len(parents))), parents)
            }
            step: dict[int, int] = {}
            for order_id, parent_id in pending.items():
                parent = found.get(parent_id)
                if parent is None:
                    continue  # the parent is gone: the order is its own root
                if parent["previous_order_id"]:
                    step[order_id] = int(parent["previous_order_id"])
                else:
                    roots[order_id] = str(parent["uuid"])
            pending = step
        return roots

    def _lines(
        self, cur: pymysql.cursors.DictCursor, meta: _Meta, enc_uuids: dict[int, str]
    ) -> tuple[BillableLine, ...]:
        ids = list(enc_uuids)
        raw: list[dict[str, Any]] = []
        orders = _all(cur, q.ACTIVE_ORDERS.format(ids=placeholders(len(ids))), ids)
        roots = self._chain_roots(cur, orders)
        for r in orders:
            kind = meta.order_kinds.get(int(r["order_type_id"]))
            if kind is None:
                continue
            qty = r["quantity"]
            raw.append(
                {
                    "line_id": roots.get(int(r["order_id"]), str(r["uuid"])),
                    "kind": kind,
                    "source_uuid": str(r["uuid"]),
                    "encounter_uuid": enc_uuids[int(r["encounter_id"])],
                    "concept_id": int(r["concept_id"]),
                    "concept_uuid": str(r["concept_uuid"]),
                    "quantity": _decimal(qty) if kind == "drug" and qty is not None else Decimal(1),
                    "served": r["date_activated"],
                    "drug_id": int(r["drug_id"]) if r["drug_id"] is not None else None,
                    "drug_uuid": str(r["drug_uuid"]) if r["drug_uuid"] is not None else None,
                    "order_type_uuid": str(r["order_type_uuid"]),
                    "care_setting": r["care_setting_type"],
                }
            )
        if meta.procedure_concepts:
            sql = q.PROCEDURE_OBS.format(
                ids=placeholders(len(ids)), concepts=placeholders(len(meta.procedure_concepts))
            )
            for r in _all(cur, sql, [*ids, *meta.procedure_concepts]):
                raw.append(
                    {
                        "kind": "procedure_obs",
                        "source_uuid": str(r["uuid"]),
                        "encounter_uuid": enc_uuids[int(r["encounter_id"])],
                        "concept_id": int(r["value_coded"]),
                        "concept_uuid": str(r["concept_uuid"]),
                        "quantity": Decimal(1),
                        "served": r["obs_datetime"],
                    }
                )
        terms: dict[int, list[tuple[str, str]]] = defaultdict(list)
        drug_terms: dict[int, list[tuple[str, str]]] = defaultdict(list)
        concept_ids = sorted({int(x["concept_id"]) for x in raw})
        drug_ids = sorted({int(x["drug_id"]) for x in raw if x.get("drug_id") is not None})
        srcs = sorted(meta.term_sources)
        if srcs and concept_ids:
            sql = q.CONCEPT_TERMS.format(ids=placeholders(len(concept_ids)), sources=placeholders(len(srcs)))
            for r in _all(cur, sql, [*concept_ids, *srcs]):
                terms[int(r["concept_id"])].append((str(r["name"]), str(r["code"])))
        if srcs and drug_ids:
            sql = q.DRUG_TERMS.format(ids=placeholders(len(drug_ids)), sources=placeholders(len(srcs)))
            for r in _all(cur, sql, [*drug_ids, *srcs]):
                drug_terms[int(r["drug_id"])].append((str(r["name"]), str(r["code"])))
        return tuple(
            BillableLine(
                **x,
                concept_codes=tuple(terms.get(int(x["concept_id"]), ())),
                drug_codes=tuple(drug_terms.get(int(x["drug_id"]), ())) if x.get("drug_id") is not None else (),
            )
            for x in raw
        )


# ---- helpers -----------------------------------------------------------------------------


def concepts_by_key(cur: pymysql.cursors.DictCursor, keys: Sequence[str]) -> dict[str, tuple[int, str, str]]:
    """``(concept id, uuid, name)`` of the concepts named by uuid or fully specified name, under
    both keys; the first name of a concept wins (English first). Keys not found are absent."""
    if not keys:
        return {}
    rows = _all(cur, q.CONCEPTS_BY_UUID_OR_NAME.format(keys=placeholders(len(keys))), [*keys, *keys])
    by_key: dict[str, tuple[int, str, str]] = {}
    for r in rows:
        entry = (int(r["concept_id"]), str(r["uuid"]), str(r["name"]))
        by_key.setdefault(str(r["uuid"]), entry)
        by_key.setdefault(str(r["name"]), entry)
    return by_key


def _document_concepts(
    cur: pymysql.cursors.DictCursor, cfg: ReaderConfig, problems: list[str]
) -> tuple[dict[int, tuple[str, str]], int | None]:
    """Concept ids of the mapping's document concepts (by uuid or name) and of Bahmni's
    ``Document``; a concept the database lacks is a configuration problem, named."""
    if not cfg.document_concepts:
        return {}, None
    by_key = concepts_by_key(cur, [*cfg.document_concepts, cfg.document_concept])
    concepts: dict[int, tuple[str, str]] = {}
    for key in cfg.document_concepts:
        if key in by_key:
            concept_id, uuid, name = by_key[key]
            concepts[concept_id] = (uuid, name)
        else:
            problems.append(f"attachments document concept {key!r} not found")
    member = by_key.get(cfg.document_concept)
    if member is None:
        problems.append(f"attachments.document_concept {cfg.document_concept!r} not found")
    return concepts, member[0] if member is not None else None


def _one(cur: pymysql.cursors.DictCursor, sql: str, params: Sequence[Any]) -> Row | None:
    cur.execute(sql, tuple(params))
    row: Row | None = cur.fetchone()
    return row


def _all(cur: pymysql.cursors.DictCursor, sql: str, params: Sequence[Any]) -> list[Row]:
    cur.execute(sql, tuple(params))
    return list(cur.fetchall())


def _rank_column(cur: pymysql.cursors.DictCursor) -> str | None:
    """``dx_rank`` (OpenMRS 2.5+), ``rank`` (2.4), or None when there is no ``encounter_diagnosis``."""
    names = {str(next(iter(r.values()))) for r in _all(cur, q.RANK_COLUMN, ())}
    return next((c for c in ("dx_rank", "rank") if c in names), None)


def read_order_kinds(cur: pymysql.cursors.DictCursor, cfg: ReaderConfig) -> dict[int, LineKind]:
    """order_type_id -> line kind for the billable order types; other order types are not read."""
    kinds: dict[int, LineKind] = {}
    for r in _all(cur, q.ORDER_TYPES, ()):
        keys = {r["uuid"], r["name"]}
        kind: LineKind | None = None
        if r["java_class_name"] == "org.openmrs.DrugOrder":
            kind = "drug"
        elif keys & set(cfg.lab_order_types):
            kind = "lab"
        elif keys & set(cfg.radiology_order_types):
            kind = "radiology"
        elif keys & set(cfg.procedure_order_types):
            kind = "procedure"
        if kind is not None:
            kinds[int(r["order_type_id"])] = kind
    return kinds


def _decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def read_locations(cur: pymysql.cursors.DictCursor, ids: set[int]) -> dict[int, Location]:
    """Locations by id, each with its visit location (itself or the nearest ancestor tagged so)."""
    rows: dict[int, Row] = {}
    pending = set(ids)
    for _ in range(_MAX_LOCATION_DEPTH):
        pending -= rows.keys()
        if not pending:
            break
        batch = sorted(pending)
        for r in _all(cur, q.LOCATIONS.format(ids=placeholders(len(batch))), batch):
            rows[int(r["location_id"])] = r
        pending = {int(r["parent_location"]) for r in rows.values() if r["parent_location"] is not None}

    def visit_location(location_id: int) -> str | None:
        current: int | None = location_id
        for _ in range(_MAX_LOCATION_DEPTH):
            row = rows.get(current) if current is not None else None
            if row is None:
                return None
            if row["is_visit_location"]:
                return str(row["uuid"])
            current = int(row["parent_location"]) if row["parent_location"] is not None else None
        return None

    return {
        i: Location(int(r["location_id"]), str(r["uuid"]), str(r["name"]), visit_location(i))
        for i, r in rows.items()
        if i in ids
    }


__all__ = [
    "Candidate",
    "ConnFactory",
    "DiagnosisConcepts",
    "OpenMrsReader",
    "PatientUnits",
    "ReaderConfig",
]
