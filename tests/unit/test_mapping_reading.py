"""reader_config: what the OpenMRS reader is told to look for, taken from the mapping file."""

from __future__ import annotations

from pathlib import Path

from cdc_claims.assemble.reader import ReaderConfig
from cdc_claims.assemble.vocabulary import DEFAULT_ICD_SOURCE_NAMES, OPERATIVE_NOTES_PROCEDURE
from cdc_claims.mapping.model import parse_mapping
from cdc_claims.mapping.reading import reader_config

NOTE = "81d6e852-3f10-11e4-adec-0800271c1b75"
BASE = {
    "openimis": {"claim_admin_default": {"code": "RHOS0011"}},
    "facilities": {"c1e42932-3f10-11e4-adec-0800271c1b75": {"code": "RAHOS001"}},
}


def test_every_field_the_reader_needs_comes_from_the_mapping(tmp_path: Path) -> None:
    mapping = parse_mapping(
        {
            **BASE,
            "insurance_number": {"person_attribute_type": "NHIS Number"},
            "icd10": {"source": {"uuid": "0d0ae4a2-4c4e-4a38-9d6b-2d1e0f1a3b5c", "names": ["ICD-10"]}},
            "order_types": {"lab": ["Lab"], "radiology": ["X-Ray"], "procedure": []},
            "procedure_obs_concepts": [NOTE],
            "concept_terms": [
                {"source": "SNOMED", "term": "1", "category": "service", "code": "S1", "price": 1},
                {"source": "CIEL", "term": "2", "category": "item", "code": "I2", "price": 2},
                {"source": "SNOMED", "term": "3", "category": "item", "code": "I3", "price": 3},
            ],
            "consultations": [
                {"encounter_type": "Consultation", "service": {"code": "A1", "price": 4}, "concept": NOTE}
            ],
        },
        base_dir=tmp_path,
    )
    cfg = reader_config(mapping)
    assert (cfg.insurance_identifier_type, cfg.insurance_attribute_type) == (None, "NHIS Number")
    assert (cfg.icd_source_uuid, cfg.icd_source_names) == ("0d0ae4a2-4c4e-4a38-9d6b-2d1e0f1a3b5c", ("ICD-10",))
    assert (cfg.lab_order_types, cfg.radiology_order_types, cfg.procedure_order_types) == (("Lab",), ("X-Ray",), ())
    assert cfg.procedure_obs_concepts == (NOTE,)
    assert cfg.term_sources == ("CIEL", "SNOMED")  # each source once, sorted
    assert cfg.consultations == mapping.consultations
    assert cfg.diagnosis_concepts == ReaderConfig().diagnosis_concepts


def test_the_mapping_defaults_are_the_readers_defaults(tmp_path: Path) -> None:
    mapping = parse_mapping({**BASE, "insurance_number": {"patient_identifier_type": "ExternalId"}}, base_dir=tmp_path)
    cfg = reader_config(mapping)
    bare = ReaderConfig()
    assert cfg.icd_source_names == bare.icd_source_names == DEFAULT_ICD_SOURCE_NAMES
    assert cfg.procedure_obs_concepts == bare.procedure_obs_concepts == (OPERATIVE_NOTES_PROCEDURE,)
    assert (cfg.lab_order_types, cfg.radiology_order_types, cfg.procedure_order_types) == (
        bare.lab_order_types,
        bare.radiology_order_types,
        bare.procedure_order_types,
    )
