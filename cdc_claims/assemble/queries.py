"""SQL text of the OpenMRS reader (the verified reference is ``shared/openmrs/queries_claim_extraction.sql``).

Every value is a pymysql ``%s`` parameter. The only text ever formatted into a statement is
(a) a run of ``%s`` placeholders for an ``IN (...)`` list (:func:`cdc_claims.db.placeholders`) and (b) the
``encounter_diagnosis`` rank column, chosen from the fixed whitelist :data:`RANK_COLUMNS` after
``information_schema`` said which one exists. No names are selected for patients.

Queries are batched over the unit's encounters: one query per kind of content, not per row.
"""

from __future__ import annotations

#: ``encounter_diagnosis.rank`` on OpenMRS <= 2.4 (Bahmni 0.94), ``dx_rank`` on 2.5+.
RANK_COLUMNS = ("rank", "dx_rank")


# ------------------------------------------------------------------------------------------
# Metadata, resolved once per reader (uuids and names, never integer ids from config)
# ------------------------------------------------------------------------------------------

CONCEPT_IDS_BY_UUID = "SELECT uuid, concept_id FROM concept WHERE uuid IN ({ids})"

GLOBAL_PROPERTY = "SELECT property_value FROM global_property WHERE property = %s"

CONCEPT_SOURCE_IDS = "SELECT concept_source_id FROM concept_reference_source WHERE uuid = %s OR name IN ({names})"

CONCEPT_SOURCE_IDS_BY_NAME = "SELECT concept_source_id, name FROM concept_reference_source WHERE name IN ({names})"

PATIENT_IDENTIFIER_TYPE = "SELECT patient_identifier_type_id FROM patient_identifier_type WHERE uuid = %s OR name = %s"

PERSON_ATTRIBUTE_TYPE = "SELECT person_attribute_type_id FROM person_attribute_type WHERE uuid = %s OR name = %s"

ORDER_TYPES = "SELECT order_type_id, uuid, name, java_class_name FROM order_type"

RANK_COLUMN = (
    "SELECT column_name FROM information_schema.columns "
    "WHERE table_schema = DATABASE() AND table_name = 'encounter_diagnosis' AND column_name IN ('rank', 'dx_rank')"
)

# ------------------------------------------------------------------------------------------
# Unit header
# ------------------------------------------------------------------------------------------

_ENCOUNTER_COLUMNS = """
SELECT e.encounter_id, e.uuid, e.encounter_datetime, e.voided, e.visit_id, e.patient_id,
       et.uuid AS type_uuid, et.name AS type_name, e.location_id
  FROM encounter e
  JOIN encounter_type et ON et.encounter_type_id = e.encounter_type
"""

ENCOUNTER_BY_ID = _ENCOUNTER_COLUMNS + " WHERE e.encounter_id = %s"
ENCOUNTER_BY_UUID = _ENCOUNTER_COLUMNS + " WHERE e.uuid = %s"
ENCOUNTERS_OF_VISIT = _ENCOUNTER_COLUMNS + " WHERE e.visit_id = %s ORDER BY e.encounter_datetime, e.encounter_id"

_VISIT_COLUMNS = """
SELECT v.visit_id, v.uuid, v.patient_id, v.date_started, v.date_stopped, v.voided, v.location_id,
       vt.uuid AS type_uuid, vt.name AS type_name
  FROM visit v
  JOIN visit_type vt ON vt.visit_type_id = v.visit_type_id
"""

VISIT_BY_ID = _VISIT_COLUMNS + " WHERE v.visit_id = %s"
VISIT_BY_UUID = _VISIT_COLUMNS + " WHERE v.uuid = %s"

# No names: uuid, gender and birthdate only.
PATIENT = """
SELECT p.person_id, p.uuid, p.gender, p.birthdate
  FROM person p JOIN patient pt ON pt.patient_id = p.person_id
 WHERE p.person_id = %s
"""

INSURANCE_FROM_IDENTIFIER = """
SELECT pi.identifier FROM patient_identifier pi
 WHERE pi.patient_id = %s AND pi.identifier_type = %s AND pi.voided = 0
 ORDER BY pi.preferred DESC, pi.patient_identifier_id DESC LIMIT 1
"""

INSURANCE_FROM_ATTRIBUTE = """
SELECT pa.value FROM person_attribute pa
 WHERE pa.person_id = %s AND pa.person_attribute_type_id = %s AND pa.voided = 0
 ORDER BY pa.person_attribute_id DESC LIMIT 1
"""

ENCOUNTER_PROVIDERS = """
SELECT ep.encounter_id, pr.provider_id, pr.uuid
  FROM encounter_provider ep JOIN provider pr ON pr.provider_id = ep.provider_id
 WHERE ep.encounter_id IN ({ids}) AND ep.voided = 0
 ORDER BY ep.encounter_id, ep.encounter_provider_id
"""

# Locations with their "Visit Location" tag flag; the reader walks parents level by level.
LOCATIONS = """
SELECT l.location_id, l.uuid, l.name, l.parent_location,
       EXISTS (SELECT 1 FROM location_tag_map m
                 JOIN location_tag t ON t.location_tag_id = m.location_tag_id
                WHERE m.location_id = l.location_id AND t.name = 'Visit Location' AND t.retired = 0)
         AS is_visit_location
  FROM location l
 WHERE l.location_id IN ({ids})
"""

# ------------------------------------------------------------------------------------------
# Diagnoses
# ------------------------------------------------------------------------------------------

# Legacy Bahmni model: non-voided "Visit Diagnoses" groups and their non-voided members. The
# members are folded in Python (coded/non-coded value, certainty, order, status, revised).
DIAGNOSIS_OBS = """
SELECT g.obs_id AS group_id, g.uuid AS group_uuid, g.encounter_id, g.obs_datetime,
       m.concept_id AS member_concept_id, m.value_coded, m.value_text
  FROM obs g
  JOIN obs m ON m.obs_group_id = g.obs_id AND m.voided = 0
 WHERE g.encounter_id IN ({ids}) AND g.concept_id = %s AND g.voided = 0
 ORDER BY g.obs_id, m.obs_id
"""

# Core model (OpenMRS >= 2.2). {rank} is "rank" or "dx_rank" (see RANK_COLUMNS).
ENCOUNTER_DIAGNOSES = """
SELECT d.diagnosis_id, d.uuid, d.encounter_id, d.diagnosis_coded, d.diagnosis_non_coded, d.certainty,
       d.`{rank}` AS dx_rank, d.date_created
  FROM encounter_diagnosis d
 WHERE d.encounter_id IN ({ids}) AND d.voided = 0
 ORDER BY d.diagnosis_id
"""

# Concept uuid plus every ICD term of the configured source(s); SAME-AS first (by the map type's
# stable uuid or name, never its id), then the oldest map for determinism.
DIAGNOSIS_CONCEPTS = """
SELECT c.concept_id, c.uuid, t.code,
       (mt.uuid = '35543629-7d8c-11e1-909d-c80aa9edcf4e' OR mt.name = 'SAME-AS') AS same_as,
       m.concept_map_id
  FROM concept c
  LEFT JOIN concept_reference_map m ON m.concept_id = c.concept_id
  LEFT JOIN concept_reference_term t ON t.concept_reference_term_id = m.concept_reference_term_id
        AND t.concept_source_id IN ({sources}) AND t.retired = 0
  LEFT JOIN concept_map_type mt ON mt.concept_map_type_id = m.concept_map_type_id
 WHERE c.concept_id IN ({ids})
 ORDER BY c.concept_id, same_as DESC, m.concept_map_id
"""

# ------------------------------------------------------------------------------------------
# Billable lines
# ------------------------------------------------------------------------------------------

# Active orders (DATA_MODEL §4): not voided, not a DISCONTINUE row, and no non-voided child
# through previous_order_id, wherever that child lives (it can sit in a later encounter).
ACTIVE_ORDERS = """
SELECT o.order_id, o.uuid, o.encounter_id, o.order_type_id, ot.uuid AS order_type_uuid,
       o.concept_id, c.uuid AS concept_uuid, o.date_activated, cs.care_setting_type,
       dor.quantity, d.drug_id, d.uuid AS drug_uuid, o.previous_order_id
  FROM orders o
  JOIN order_type ot ON ot.order_type_id = o.order_type_id
  JOIN concept c ON c.concept_id = o.concept_id
  LEFT JOIN care_setting cs ON cs.care_setting_id = o.care_setting
  LEFT JOIN drug_order dor ON dor.order_id = o.order_id
  LEFT JOIN drug d ON d.drug_id = dor.drug_inventory_id
 WHERE o.encounter_id IN ({ids}) AND o.voided = 0 AND o.order_action <> 'DISCONTINUE'
   AND NOT EXISTS (SELECT 1 FROM orders ch WHERE ch.previous_order_id = o.order_id AND ch.voided = 0)
 ORDER BY o.encounter_id, o.order_id
"""

# One step up revision chains (REVISE rows point at the order they replace): repeated until every
# active order's first order is known, so a line keeps its identity across edits.
ORDER_PARENTS = "SELECT order_id, uuid, previous_order_id FROM orders WHERE order_id IN ({ids})"

PROCEDURE_OBS = """
SELECT o.obs_id, o.uuid, o.encounter_id, o.value_coded, c.uuid AS concept_uuid, o.obs_datetime
  FROM obs o
  JOIN concept c ON c.concept_id = o.value_coded
 WHERE o.encounter_id IN ({ids}) AND o.concept_id IN ({concepts}) AND o.voided = 0
 ORDER BY o.encounter_id, o.obs_id
"""

# Concepts named by uuid or fully specified name (the mapping's documents), with that name.
CONCEPTS_BY_UUID_OR_NAME = """
SELECT c.concept_id, c.uuid, cn.name
  FROM concept c
  JOIN concept_name cn ON cn.concept_id = c.concept_id AND cn.concept_name_type = 'FULLY_SPECIFIED'
   AND cn.voided = 0
 WHERE c.uuid IN ({keys}) OR cn.name IN ({keys})
 ORDER BY c.concept_id, cn.locale <> 'en', cn.concept_name_id
"""

# Documents of a visit (DATA_MODEL: Bahmni files an upload in an encounter of its own, e.g.
# "Patient Document" or "RADIOLOGY", as an obs group of the document's concept whose member
# obs of concept "Document" holds the file path under /home/bahmni/document_images); and complex
# obs of the listed concepts (``value_complex`` "title|file" under OpenMRS's complex_obs).
DOCUMENT_OBS = """
SELECT o.uuid AS obs_uuid, e.uuid AS encounter_uuid, g.concept_id, o.value_text AS path,
       'documents' AS store, o.obs_datetime AS recorded
  FROM obs o
  JOIN obs g ON g.obs_id = o.obs_group_id AND g.voided = 0
  JOIN encounter e ON e.encounter_id = o.encounter_id AND e.voided = 0
 WHERE e.visit_id = %s AND o.voided = 0 AND o.concept_id = %s AND g.concept_id IN ({ids})
   AND o.value_text IS NOT NULL AND o.value_text <> ''
UNION ALL
SELECT o.uuid, e.uuid, o.concept_id, o.value_complex, 'complex_obs', o.obs_datetime
  FROM obs o
  JOIN encounter e ON e.encounter_id = o.encounter_id AND e.voided = 0
 WHERE e.visit_id = %s AND o.voided = 0 AND o.concept_id IN ({ids})
   AND o.value_complex IS NOT NULL AND o.value_complex <> ''
 ORDER BY recorded, obs_uuid
"""

CONCEPT_TERMS = """
SELECT m.concept_id, s.name, t.code
  FROM concept_reference_map m
  JOIN concept_reference_term t ON t.concept_reference_term_id = m.concept_reference_term_id AND t.retired = 0
  JOIN concept_reference_source s ON s.concept_source_id = t.concept_source_id
 WHERE m.concept_id IN ({ids}) AND s.concept_source_id IN ({sources})
 ORDER BY m.concept_id, s.name, t.code
"""

DRUG_TERMS = """
SELECT drm.drug_id, s.name, t.code
  FROM drug_reference_map drm
  JOIN concept_reference_term t ON t.concept_reference_term_id = drm.term_id AND t.retired = 0
  JOIN concept_reference_source s ON s.concept_source_id = t.concept_source_id
 WHERE drm.retired = 0 AND drm.drug_id IN ({ids}) AND s.concept_source_id IN ({sources})
 ORDER BY drm.drug_id, s.name, t.code
"""

# ------------------------------------------------------------------------------------------
# Helpers for the consumer (CDC row -> unit)
# ------------------------------------------------------------------------------------------

ENCOUNTER_VISITS = "SELECT encounter_id, visit_id FROM encounter WHERE encounter_id IN ({ids}) AND visit_id IS NOT NULL"

ORDER_ENCOUNTERS = "SELECT order_id, encounter_id FROM orders WHERE order_id IN ({ids}) AND encounter_id IS NOT NULL"

PATIENT_ENCOUNTERS = "SELECT encounter_id FROM encounter WHERE patient_id = %s AND voided = 0 ORDER BY encounter_id"

PATIENT_VISITS = "SELECT visit_id FROM visit WHERE patient_id = %s AND voided = 0 ORDER BY visit_id"

PERSON_UUIDS = "SELECT person_id, uuid FROM person WHERE person_id IN ({ids})"

ENCOUNTER_IDS_BY_UUID = "SELECT uuid, encounter_id FROM encounter WHERE uuid IN ({ids})"

ENCOUNTER_ID_BY_UUID = "SELECT encounter_id AS id FROM encounter WHERE uuid = %s"

VISIT_ID_BY_UUID = "SELECT visit_id AS id FROM visit WHERE uuid = %s"

# ------------------------------------------------------------------------------------------
# Backfill: the claimable units of a date range, a page at a time (``cdc-claims backfill``)
# ------------------------------------------------------------------------------------------

# Keyset pagination on (time, id): a page starts after the last row of the previous one, so a
# year of encounters is read 500 at a time with flat memory. {facility} is empty or
# BACKFILL_FACILITY (the visit's location, by uuid or name). Parameters: since, until, then the
# facility keys twice, then the keyset (time, time, id) and the page size.
BACKFILL_ENCOUNTERS = """
SELECT e.encounter_id AS id, e.uuid, e.encounter_datetime AS at
  FROM encounter e
  JOIN visit v ON v.visit_id = e.visit_id
  JOIN location l ON l.location_id = v.location_id
 WHERE e.voided = 0 AND v.voided = 0 AND e.encounter_datetime >= %s AND e.encounter_datetime < %s{facility}
   AND (e.encounter_datetime > %s OR (e.encounter_datetime = %s AND e.encounter_id > %s))
 ORDER BY e.encounter_datetime, e.encounter_id
 LIMIT %s
"""

BACKFILL_ENCOUNTERS_COUNT = """
SELECT COUNT(*) AS n
  FROM encounter e
  JOIN visit v ON v.visit_id = e.visit_id
  JOIN location l ON l.location_id = v.location_id
 WHERE e.voided = 0 AND v.voided = 0 AND e.encounter_datetime >= %s AND e.encounter_datetime < %s{facility}
"""

# Visit mode: closed visits only (``date_stopped`` set), by ``date_started``.
BACKFILL_VISITS = """
SELECT v.visit_id AS id, v.uuid, v.date_started AS at
  FROM visit v
  JOIN location l ON l.location_id = v.location_id
 WHERE v.voided = 0 AND v.date_stopped IS NOT NULL AND v.date_started >= %s AND v.date_started < %s{facility}
   AND (v.date_started > %s OR (v.date_started = %s AND v.visit_id > %s))
 ORDER BY v.date_started, v.visit_id
 LIMIT %s
"""

BACKFILL_VISITS_COUNT = """
SELECT COUNT(*) AS n
  FROM visit v
  JOIN location l ON l.location_id = v.location_id
 WHERE v.voided = 0 AND v.date_stopped IS NOT NULL AND v.date_started >= %s AND v.date_started < %s{facility}
"""

BACKFILL_FACILITY = " AND (l.uuid IN ({keys}) OR l.name IN ({keys}))"
