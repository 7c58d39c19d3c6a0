"""Metadata the Bahmni save simulator needs, resolved by uuid, mapping or name (never by id).

Integer ids differ between installs; uuids, emrapi mappings and names do not
(``DATA_MODEL.md`` §1.2, §3.1). Everything is read once per simulator, in one query batch.
"""

from __future__ import annotations

import uuid as _uuid
from dataclasses import dataclass
from typing import Any

from pymysql.cursors import DictCursor

EMRAPI_SOURCE = "org.openmrs.module.emrapi"

# Diagnosis machinery (DATA_MODEL §3.1)
VISIT_DIAGNOSES = "81c5840e-3f10-11e4-adec-0800271c1b75"
CODED_DIAGNOSIS = "81c7149b-3f10-11e4-adec-0800271c1b75"
NON_CODED_DIAGNOSIS = "81c66271-3f10-11e4-adec-0800271c1b75"
DIAGNOSIS_CERTAINTY = "81c7d52c-3f10-11e4-adec-0800271c1b75"
DIAGNOSIS_ORDER = "81c9da5f-3f10-11e4-adec-0800271c1b75"
BAHMNI_DIAGNOSIS_STATUS = "82389c0c-3f10-11e4-adec-0800271c1b75"
BAHMNI_INITIAL_DIAGNOSIS = "82397881-3f10-11e4-adec-0800271c1b75"
BAHMNI_DIAGNOSIS_REVISED = "823a4d34-3f10-11e4-adec-0800271c1b75"
# Procedures documented on the "Operative Notes" form (DATA_MODEL §4)
OPERATIVE_NOTES_PROCEDURE = "243d25b1-9d6e-4883-86f0-ed3a34c83ab4"
OPERATIVE_NOTES_NAME = "Operative Notes"

EXTERNAL_ID_IDENTIFIER_TYPE = "ee8e82c4-1563-43aa-8c73-c3e4e88cb79b"
UNKNOWN_ENCOUNTER_ROLE = "a0b03050-c99b-11e0-9572-0800200c9a66"
CONSULTATION_ENCOUNTER_TYPE = "81852aee-3f10-11e4-adec-0800271c1b75"
DRUG_ORDER_TYPE = "131168f4-15f5-102d-96e4-000c29c2a5d7"
LAB_ORDER_TYPE = "8189b409-3f10-11e4-adec-0800271c1b75"
RADIOLOGY_ORDER_TYPE = "8189dbdd-3f10-11e4-adec-0800271c1b75"
PROCEDURE_ORDER_TYPE_NAME = "Procedure Order"
#: Bahmni's clinic-config gives the Procedure Order type no uuid; ours is fixed so reruns find it.
PROCEDURE_ORDER_TYPE_UUID = str(_uuid.uuid5(_uuid.NAMESPACE_URL, "cdc-claims:bahmni:order_type:Procedure Order"))
FLEXIBLE_DOSING = "org.openmrs.module.bahmniemrapi.drugorder.dosinginstructions.FlexibleDosingInstructions"


class MetadataMissing(LookupError):
    """A piece of Bahmni metadata the simulator needs is not in this database."""


@dataclass(frozen=True)
class BahmniMeta:
    """Integer ids of this database, resolved from stable keys."""

    user_id: int  # the clinician's OpenMRS user (creator of every row)
    provider_id: int  # the clinician's provider (orderer, encounter_provider)
    encounter_role_id: int
    consultation_type_id: int
    concepts: dict[str, int]  # uuid -> concept_id for the diagnosis/procedure machinery
    certainty: dict[str, int]  # "CONFIRMED"/"PROVISIONAL" -> answer concept id
    dx_order: dict[bool, int]  # primary? -> answer concept id
    true_id: int
    false_id: int
    operative_notes_id: int | None
    order_types: dict[str, int]  # "drug"/"lab"/"radiology" -> order_type_id
    care_settings: dict[str, int]  # OUTPATIENT/INPATIENT -> care_setting_id
    primary_identifier_type_id: int
    external_id_type_id: int | None
    idgen_source_id: int | None
    visit_status_type_id: int | None
    session_minutes: int
    route_oral: int | None
    days_unit: int | None
    tablet_unit: int | None
    frequency_id: int | None


def _scalar(cur: DictCursor, sql: str, args: tuple[Any, ...] = ()) -> Any:
    cur.execute(sql, args)
    row = cur.fetchone()
    return None if row is None else next(iter(row.values()))


def _required(value: Any, what: str) -> int:
    if value is None:
        raise MetadataMissing(f"Bahmni metadata not found: {what}")
    return int(value)


def concept_id(cur: DictCursor, uuid: str) -> int | None:
    value = _scalar(cur, "SELECT concept_id FROM concept WHERE uuid = %s", (uuid,))
    return None if value is None else int(value)


def concept_by_name(cur: DictCursor, name: str) -> int | None:
    value = _scalar(
        cur,
        "SELECT c.concept_id FROM concept c JOIN concept_name n ON n.concept_id = c.concept_id"
        " WHERE n.name = %s AND n.locale = 'en' AND n.concept_name_type = 'FULLY_SPECIFIED' AND n.voided = 0"
        " AND c.retired = 0 ORDER BY c.concept_id LIMIT 1",
        (name,),
    )
    return None if value is None else int(value)


def _emrapi_answer(cur: DictCursor, code: str) -> int | None:
    value = _scalar(
        cur,
        "SELECT m.concept_id FROM concept_reference_map m"
        " JOIN concept_reference_term t ON t.concept_reference_term_id = m.concept_reference_term_id"
        " JOIN concept_reference_source s ON s.concept_source_id = t.concept_source_id"
        " WHERE s.name = %s AND t.code = %s LIMIT 1",
        (EMRAPI_SOURCE, code),
    )
    return None if value is None else int(value)


def _gp_concept(cur: DictCursor, prop: str) -> int | None:
    """GP ``concept.true``/``concept.false`` hold an id on some installs and a uuid on others."""
    value = _scalar(cur, "SELECT property_value FROM global_property WHERE property = %s", (prop,))
    if value is None:
        return None
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    return concept_id(cur, text)


def load(cur: DictCursor, *, provider_uuid: str, username: str | None) -> BahmniMeta:
    """Resolve everything once. ``username`` None = the provider's own user account."""
    cur.execute("SELECT provider_id, person_id FROM provider WHERE uuid = %s", (provider_uuid,))
    prov = cur.fetchone()
    if prov is None:
        raise MetadataMissing(f"provider {provider_uuid} not found")
    if username is not None:
        user = _scalar(cur, "SELECT user_id FROM users WHERE username = %s OR system_id = %s", (username, username))
    else:
        user = _scalar(
            cur, "SELECT user_id FROM users WHERE person_id = %s AND retired = 0 LIMIT 1", (prov["person_id"],)
        )
    user_id = _required(user, f"user {username or 'of provider ' + provider_uuid}")

    concepts = {
        u: _required(concept_id(cur, u), f"concept {u}")
        for u in (
            VISIT_DIAGNOSES,
            CODED_DIAGNOSIS,
            NON_CODED_DIAGNOSIS,
            DIAGNOSIS_CERTAINTY,
            DIAGNOSIS_ORDER,
            BAHMNI_INITIAL_DIAGNOSIS,
            BAHMNI_DIAGNOSIS_REVISED,
        )
    }
    for optional in (BAHMNI_DIAGNOSIS_STATUS, OPERATIVE_NOTES_PROCEDURE):
        found = concept_id(cur, optional)
        if found is not None:
            concepts[optional] = found

    order_types = {
        kind: _required(_scalar(cur, "SELECT order_type_id FROM order_type WHERE uuid = %s", (u,)), f"order type {u}")
        for kind, u in (("drug", DRUG_ORDER_TYPE), ("lab", LAB_ORDER_TYPE), ("radiology", RADIOLOGY_ORDER_TYPE))
    }
    cur.execute("SELECT care_setting_id, care_setting_type FROM care_setting WHERE retired = 0")
    care_settings = {str(r["care_setting_type"]): int(r["care_setting_id"]) for r in cur.fetchall()}

    primary_type_uuid = _scalar(
        cur, "SELECT property_value FROM global_property WHERE property = 'bahmni.primaryIdentifierType'"
    )
    primary_type = _scalar(
        cur, "SELECT patient_identifier_type_id FROM patient_identifier_type WHERE uuid = %s", (primary_type_uuid,)
    )
    primary_type_id = _required(primary_type, "GP bahmni.primaryIdentifierType")
    idgen = _scalar(
        cur,
        "SELECT s.id FROM idgen_identifier_source s JOIN idgen_seq_id_gen g ON g.id = s.id"
        " WHERE s.identifier_type = %s AND s.retired = 0 ORDER BY s.id LIMIT 1",
        (primary_type_id,),
    )
    frequency = _scalar(
        cur,
        "SELECT f.order_frequency_id FROM order_frequency f JOIN concept_name n ON n.concept_id = f.concept_id"
        " WHERE n.name = 'Once a day' AND n.locale = 'en' AND f.retired = 0 LIMIT 1",
    ) or _scalar(cur, "SELECT order_frequency_id FROM order_frequency WHERE retired = 0 ORDER BY 1 LIMIT 1")
    session = _scalar(
        cur, "SELECT property_value FROM global_property WHERE property = 'bahmni.encountersession.duration'"
    )

    return BahmniMeta(
        user_id=user_id,
        provider_id=int(prov["provider_id"]),
        encounter_role_id=_required(
            _scalar(cur, "SELECT encounter_role_id FROM encounter_role WHERE uuid = %s", (UNKNOWN_ENCOUNTER_ROLE,)),
            "encounter role Unknown",
        ),
        consultation_type_id=_required(
            _scalar(
                cur, "SELECT encounter_type_id FROM encounter_type WHERE uuid = %s", (CONSULTATION_ENCOUNTER_TYPE,)
            ),
            "encounter type Consultation",
        ),
        concepts=concepts,
        certainty={
            "CONFIRMED": _required(_emrapi_answer(cur, "Confirmed"), "emrapi Confirmed"),
            "PROVISIONAL": _required(_emrapi_answer(cur, "Presumed"), "emrapi Presumed"),
        },
        dx_order={
            True: _required(_emrapi_answer(cur, "Primary"), "emrapi Primary"),
            False: _required(_emrapi_answer(cur, "Secondary"), "emrapi Secondary"),
        },
        true_id=_required(_gp_concept(cur, "concept.true"), "GP concept.true"),
        false_id=_required(_gp_concept(cur, "concept.false"), "GP concept.false"),
        operative_notes_id=concept_by_name(cur, OPERATIVE_NOTES_NAME),
        order_types=order_types,
        care_settings=care_settings,
        primary_identifier_type_id=primary_type_id,
        external_id_type_id=_scalar(
            cur,
            "SELECT patient_identifier_type_id FROM patient_identifier_type WHERE uuid = %s",
            (EXTERNAL_ID_IDENTIFIER_TYPE,),
        ),
        idgen_source_id=None if idgen is None else int(idgen),
        visit_status_type_id=_scalar(
            cur, "SELECT visit_attribute_type_id FROM visit_attribute_type WHERE name = 'Visit Status' AND retired = 0"
        ),
        session_minutes=int(session) if session and str(session).isdigit() else 60,
        route_oral=concept_by_name(cur, "Oral"),
        days_unit=concept_by_name(cur, "Day(s)"),
        tablet_unit=concept_by_name(cur, "Tablet(s)"),
        frequency_id=None if frequency is None else int(frequency),
    )
