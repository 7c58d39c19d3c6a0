"""``check-mapping``: what the OpenMRS database uses that the mapping does not cover.

Read-only and database-wide (not per claim): the concepts and drugs of billable orders, procedure
obs answers, diagnosis concepts (and whether their ICD code is one openIMIS knows), encounter
locations, visit types, encounter types, providers and the document concepts the mapping attaches.
Only metadata names are shown (concept,
drug, location and type names), never patient data.

*Blocking* findings make claims be held (unmapped lines, facilities, ICD codes); *info* findings
fall back to a default (visit type -> O, provider -> the default claim admin, encounter type ->
no consultation line).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import pymysql
import pymysql.cursors

from cdc_claims.assemble.reader import ReaderConfig, concepts_by_key, read_locations, read_order_kinds
from cdc_claims.assemble.selection import known_index, normalise_icd
from cdc_claims.assemble.vocabulary import DEFAULT_ICD_SOURCE_NAMES
from cdc_claims.db import placeholders
from cdc_claims.errors import SourceUnavailable
from cdc_claims.mapping.model import ClaimMapping
from cdc_claims.mapping.reading import reader_config

Severity = Literal["blocking", "info"]

# Concept names (metadata) for the report: the English fully specified name, else any English one.
_ORDERS_USED = """
SELECT o.order_type_id, c.uuid AS concept_uuid, MIN(n.name) AS concept_name,
       d.uuid AS drug_uuid, d.name AS drug_name, COUNT(DISTINCT o.order_id) AS n
  FROM orders o JOIN concept c ON c.concept_id = o.concept_id
  LEFT JOIN concept_name n ON n.concept_id = o.concept_id AND n.locale = 'en' AND n.voided = 0
        AND n.concept_name_type = 'FULLY_SPECIFIED'
  LEFT JOIN drug_order dor ON dor.order_id = o.order_id LEFT JOIN drug d ON d.drug_id = dor.drug_inventory_id
 WHERE o.voided = 0 AND o.order_action <> 'DISCONTINUE'
 GROUP BY o.order_type_id, c.uuid, d.uuid, d.name
"""

_PROCEDURE_OBS_USED = """
SELECT c.uuid AS concept_uuid, MIN(n.name) AS concept_name, COUNT(DISTINCT o.obs_id) AS n
  FROM obs o JOIN concept q ON q.concept_id = o.concept_id JOIN concept c ON c.concept_id = o.value_coded
  LEFT JOIN concept_name n ON n.concept_id = o.value_coded AND n.locale = 'en' AND n.voided = 0
        AND n.concept_name_type = 'FULLY_SPECIFIED'
 WHERE o.voided = 0 AND q.uuid IN ({uuids})
 GROUP BY c.uuid
"""

_DIAGNOSES_USED = """
SELECT c.uuid AS concept_uuid, x.n,
       (SELECT MIN(n.name) FROM concept_name n WHERE n.concept_id = c.concept_id AND n.locale = 'en'
           AND n.voided = 0 AND n.concept_name_type = 'FULLY_SPECIFIED') AS concept_name,
       (SELECT t.code FROM concept_reference_map m
          JOIN concept_reference_term t ON t.concept_reference_term_id = m.concept_reference_term_id
          JOIN concept_reference_source s ON s.concept_source_id = t.concept_source_id
          JOIN concept_map_type mt ON mt.concept_map_type_id = m.concept_map_type_id
         WHERE m.concept_id = c.concept_id AND t.retired = 0 AND (s.uuid = %s OR s.name IN ({names}))
         ORDER BY mt.name = 'SAME-AS' DESC, m.concept_map_id LIMIT 1) AS icd10
  FROM (SELECT v.value_coded AS concept_id, COUNT(*) AS n FROM obs v JOIN concept q ON q.concept_id = v.concept_id
         WHERE v.voided = 0 AND q.uuid = %s GROUP BY v.value_coded
        {core}) x
  JOIN concept c ON c.concept_id = x.concept_id
"""

_CORE_DIAGNOSES = """UNION ALL SELECT diagnosis_coded, COUNT(*) FROM encounter_diagnosis
         WHERE voided = 0 AND diagnosis_coded IS NOT NULL GROUP BY diagnosis_coded"""

_ENCOUNTER_LOCATIONS = (
    "SELECT location_id, COUNT(*) AS n FROM encounter WHERE voided = 0 AND location_id IS NOT NULL GROUP BY location_id"
)
_VISIT_TYPES = """SELECT vt.uuid, vt.name, COUNT(*) AS n
  FROM visit v JOIN visit_type vt ON vt.visit_type_id = v.visit_type_id
 WHERE v.voided = 0 GROUP BY vt.uuid, vt.name"""
_ENCOUNTER_TYPES = """SELECT et.uuid, et.name, COUNT(*) AS n
  FROM encounter e JOIN encounter_type et ON et.encounter_type_id = e.encounter_type
 WHERE e.voided = 0 GROUP BY et.uuid, et.name"""
_PROVIDERS = """SELECT p.uuid, COUNT(*) AS n
  FROM encounter_provider ep JOIN provider p ON p.provider_id = ep.provider_id
 WHERE ep.voided = 0 GROUP BY p.uuid"""
_HAS_ENCOUNTER_DIAGNOSIS = """SELECT COUNT(*) AS n FROM information_schema.tables
 WHERE table_schema = DATABASE() AND table_name = 'encounter_diagnosis'"""


@dataclass(frozen=True)
class Finding:
    severity: Severity
    topic: str  # "order concept", "drug", "procedure obs", "diagnosis ICD", "facility", "visit type", ...
    uuid: str
    name: str
    count: int
    detail: str = ""


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """True when nothing would make a claim be held for a mapping reason."""
        return not any(f.severity == "blocking" for f in self.findings)

    def by_topic(self, topic: str) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.topic == topic)


def check_mapping(reader_conn: pymysql.connections.Connection[Any], mapping: ClaimMapping) -> Report:
    """Compare what the database uses with ``mapping``; database errors become SourceUnavailable."""
    try:
        with reader_conn.cursor(pymysql.cursors.DictCursor) as cur:
            return Report(tuple(_findings(cur, mapping)))
    except pymysql.MySQLError as err:
        raise SourceUnavailable(f"OpenMRS database: {type(err).__name__}") from err


def render_text(report: Report) -> str:
    """A plain-text report, blocking findings first."""
    if not report.findings:
        return "mapping covers everything the database uses\n"
    lines = []
    for severity in ("blocking", "info"):
        group = [f for f in report.findings if f.severity == severity]
        if not group:
            continue
        lines.append(f"{severity.upper()} ({len(group)}):")
        for f in sorted(group, key=lambda f: (f.topic, f.name, f.uuid)):
            extra = f" - {f.detail}" if f.detail else ""
            used = f" used {f.count}x" if f.count else ""  # openIMIS findings are about the file, not use
            lines.append(f"  {f.topic}: {f.uuid} {f.name!r}{used}{extra}")
    lines.append("OK" if report.ok else "NOT OK: claims using the blocking items will be held")
    return "\n".join(lines) + "\n"


def _all(cur: pymysql.cursors.DictCursor, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    cur.execute(sql, tuple(params))
    return list(cur.fetchall())


def _findings(cur: pymysql.cursors.DictCursor, mapping: ClaimMapping) -> list[Finding]:
    cfg = reader_config(mapping)
    out: list[Finding] = []
    term_rules = mapping.term_rules()
    termed = _termed_concepts(cur, term_rules) if term_rules else set()

    ref = mapping.reference_terms.source if mapping.reference_terms is not None else None
    ref_concepts = _reference_codes(cur, _REF_CONCEPT_TERMS, ref) if ref else {}
    ref_drugs = _reference_codes(cur, _REF_DRUG_TERMS, ref) if ref else {}

    kinds = read_order_kinds(cur, cfg)
    for r in _all(cur, _ORDERS_USED):
        kind = kinds.get(int(r["order_type_id"]))
        if kind is None:
            continue
        if kind == "drug" and r["drug_uuid"] is not None and r["drug_uuid"] in mapping.drugs:
            continue
        if r["concept_uuid"] in mapping.concepts or r["concept_uuid"] in termed:
            continue
        by_term = (ref_drugs.get(str(r["drug_uuid"])) if kind == "drug" else None) or ref_concepts.get(
            str(r["concept_uuid"])
        )
        if by_term is not None:  # the reference_terms rule maps it; --openimis checks the code exists
            name = str(r["drug_name"] if kind == "drug" and r["drug_uuid"] else r["concept_name"])
            uuid = str(r["drug_uuid"] if kind == "drug" and r["drug_uuid"] else r["concept_uuid"])
            topic = REFERENCE_TERM_ITEM if kind == "drug" else REFERENCE_TERM_LINE
            out.append(Finding("info", topic, uuid, name, int(r["n"]), f"{ref}:{by_term}"))
            continue
        if kind == "drug" and r["drug_uuid"] is not None:
            out.append(Finding("blocking", "drug", r["drug_uuid"], str(r["drug_name"]), int(r["n"])))
        else:
            out.append(
                Finding("blocking", f"{kind} order concept", r["concept_uuid"], str(r["concept_name"]), int(r["n"]))
            )

    if mapping.procedure_obs_concepts:
        sql = _PROCEDURE_OBS_USED.format(uuids=placeholders(len(mapping.procedure_obs_concepts)))
        for r in _all(cur, sql, mapping.procedure_obs_concepts):
            if r["concept_uuid"] in ref_concepts:
                detail = f"{ref}:{ref_concepts[r['concept_uuid']]}"
                out.append(
                    Finding("info", REFERENCE_TERM_LINE, r["concept_uuid"], str(r["concept_name"]), int(r["n"]), detail)
                )
            elif r["concept_uuid"] not in mapping.concepts and r["concept_uuid"] not in termed:
                out.append(
                    Finding("blocking", "procedure obs answer", r["concept_uuid"], str(r["concept_name"]), int(r["n"]))
                )

    out += _diagnosis_findings(cur, mapping, cfg)

    loc_rows = _all(cur, _ENCOUNTER_LOCATIONS)
    locations = read_locations(cur, {int(r["location_id"]) for r in loc_rows})
    for r in loc_rows:
        loc = locations.get(int(r["location_id"]))
        if loc is None or loc.uuid in mapping.facilities or (loc.visit_location_uuid or "") in mapping.facilities:
            continue
        out.append(Finding("blocking", "facility", loc.uuid, loc.name, int(r["n"]), "encounter location unmapped"))

    for r in _all(cur, _VISIT_TYPES):
        if r["uuid"] not in mapping.visit_types and r["name"] not in mapping.visit_types:
            out.append(Finding("info", "visit type", r["uuid"], str(r["name"]), int(r["n"]), "claimed as O"))
    consult_keys = {c.encounter_type for c in mapping.consultations}
    for r in _all(cur, _ENCOUNTER_TYPES):
        if r["uuid"] not in consult_keys and r["name"] not in consult_keys:
            out.append(
                Finding("info", "encounter type", r["uuid"], str(r["name"]), int(r["n"]), "no consultation line")
            )
    for r in _all(cur, _PROVIDERS):
        if r["uuid"] not in mapping.claim_admins:
            out.append(Finding("info", "provider", r["uuid"], "", int(r["n"]), "enters as the default claim admin"))
    return out + _attachment_findings(cur, mapping)


#: findings about the mapping's ``attachments.documents`` concepts
ATTACHMENT = "attachment document"
_DOCUMENTS_FILED = """SELECT concept_id, COUNT(*) AS n FROM obs
 WHERE concept_id IN ({ids}) AND voided = 0 GROUP BY concept_id"""


def _attachment_findings(cur: pymysql.cursors.DictCursor, mapping: ClaimMapping) -> list[Finding]:
    """Each document concept the mapping attaches: unknown to the database (blocking: the
    consumer refuses to start), or how many such documents are on file (info). Concepts are
    resolved as the reader resolves them (:func:`~cdc_claims.assemble.reader.concepts_by_key`)."""
    section = mapping.attachments
    if section is None:
        return []
    by_key = concepts_by_key(cur, [*(rule.concept for rule in section.documents), section.document_concept])
    ids = sorted({by_key[rule.concept][0] for rule in section.documents if rule.concept in by_key})
    filed: dict[int, int] = {}
    if ids:
        rows = _all(cur, _DOCUMENTS_FILED.format(ids=placeholders(len(ids))), ids)
        filed = {int(r["concept_id"]): int(r["n"]) for r in rows}
    out: list[Finding] = []
    for rule in section.documents:
        if rule.concept not in by_key:
            out.append(Finding("blocking", ATTACHMENT, rule.concept, "", 0, "no such concept in OpenMRS"))
            continue
        concept_id, uuid, name = by_key[rule.concept]
        what = "required: a claim whose visit has none is held (attachment_missing)" if rule.required else "optional"
        out.append(Finding("info", ATTACHMENT, uuid, name, filed.get(concept_id, 0), what))
    if section.document_concept not in by_key:
        out.append(
            Finding("blocking", ATTACHMENT, section.document_concept, "", 0, "attachments.document_concept not found")
        )
    return out


#: info findings of lines the ``reference_terms`` rule maps (detail: ``<source>:<code>``)
REFERENCE_TERM_ITEM = "mapped by reference term (drug)"
REFERENCE_TERM_LINE = "mapped by reference term"

_REF_CONCEPT_TERMS = """SELECT c.uuid, MIN(t.code) AS code FROM concept_reference_map m
  JOIN concept c ON c.concept_id = m.concept_id
  JOIN concept_reference_term t ON t.concept_reference_term_id = m.concept_reference_term_id AND t.retired = 0
  JOIN concept_reference_source s ON s.concept_source_id = t.concept_source_id
 WHERE s.name = %s GROUP BY c.uuid"""
_REF_DRUG_TERMS = """SELECT d.uuid, MIN(t.code) AS code FROM drug_reference_map drm
  JOIN drug d ON d.drug_id = drm.drug_id
  JOIN concept_reference_term t ON t.concept_reference_term_id = drm.term_id AND t.retired = 0
  JOIN concept_reference_source s ON s.concept_source_id = t.concept_source_id
 WHERE drm.retired = 0 AND s.name = %s GROUP BY d.uuid"""


def _reference_codes(cur: pymysql.cursors.DictCursor, sql: str, source: str) -> dict[str, str]:
    return {str(r["uuid"]): str(r["code"]) for r in _all(cur, sql, [source])}


def _termed_concepts(cur: pymysql.cursors.DictCursor, rules: dict[tuple[str, str], Any]) -> set[str]:
    """Uuids of the concepts that a ``concept_terms`` rule matches."""
    sql = """SELECT c.uuid, s.name, t.code FROM concept_reference_map m
      JOIN concept c ON c.concept_id = m.concept_id
      JOIN concept_reference_term t ON t.concept_reference_term_id = m.concept_reference_term_id AND t.retired = 0
      JOIN concept_reference_source s ON s.concept_source_id = t.concept_source_id
     WHERE s.name IN ({names})"""
    names = sorted({source for source, _ in rules})
    rows = _all(cur, sql.format(names=placeholders(len(names))), names)
    return {str(r["uuid"]) for r in rows if (r["name"], r["code"]) in rules}


def _diagnosis_findings(cur: pymysql.cursors.DictCursor, mapping: ClaimMapping, cfg: ReaderConfig) -> list[Finding]:
    names = list(mapping.icd10.source.names) or list(DEFAULT_ICD_SOURCE_NAMES)
    has_core = int(_all(cur, _HAS_ENCOUNTER_DIAGNOSIS)[0]["n"]) > 0
    sql = _DIAGNOSES_USED.format(names=placeholders(len(names)), core=_CORE_DIAGNOSES if has_core else "")
    rows = _all(cur, sql, [mapping.icd10.source.uuid or "", *names, cfg.diagnosis_concepts.coded])
    known = known_index(mapping.known_icd_codes) if mapping.known_icd_codes is not None else None
    merged: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = merged.setdefault(str(r["concept_uuid"]), {"name": str(r["concept_name"]), "icd10": r["icd10"], "n": 0})
        entry["n"] += int(r["n"])
    out = []
    for concept_uuid, e in sorted(merged.items()):
        if concept_uuid in mapping.icd10.overrides:
            continue
        if e["icd10"] is None:
            out.append(Finding("blocking", "diagnosis ICD", concept_uuid, e["name"], e["n"], "no ICD-10 map"))
        elif normalise_icd(e["icd10"], strip_dots=mapping.icd10.strip_dots, known=known) is None:
            out.append(
                Finding(
                    "blocking", "diagnosis ICD", concept_uuid, e["name"], e["n"], f"{e['icd10']} unknown to openIMIS"
                )
            )
    return out
