"""Mapping file validation: every problem reported, with its YAML path."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc_claims.errors import ConfigError
from cdc_claims.mapping.model import load_mapping, parse_mapping

DEMO = Path(__file__).resolve().parents[2] / "examples" / "mapping.yaml"
U = "11111111-1111-1111-1111-111111111111"


def minimal() -> dict[str, object]:
    return {
        "openimis": {"claim_admin_default": {"code": "RHOS0011"}},
        "insurance_number": {"patient_identifier_type": "ExternalId"},
        "facilities": {U: {"code": "RAHOS001"}},
    }


def test_demo_mapping_loads() -> None:
    m = load_mapping(DEMO)
    assert m.known_icd_codes is not None and len(m.known_icd_codes) == 571 and "A09" in m.known_icd_codes
    assert m.visit_type_code("x", "EMERGENCY") == "E" and m.visit_type_code("x", "LAB VISIT") == "O"
    assert set(m.icd10.overrides.values()) <= m.known_icd_codes


def test_minimal_mapping_defaults(tmp_path: Path) -> None:
    m = parse_mapping(minimal(), base_dir=tmp_path)
    assert m.diagnoses.confirmed_only and m.diagnoses.max == 5 and m.icd10.strip_dots
    assert m.known_icd_codes is None
    assert m.icd10.source.names == ("ICD 10 - WHO", "ICD-10-WHO")


def test_every_problem_is_listed_with_its_path(tmp_path: Path) -> None:
    data = minimal()
    data["insurance_number"] = {"patient_identifier_type": "a", "person_attribute_type": "b"}
    data["concepts"] = {U: {"category": "drug", "code": "X", "price": -1}}
    data["visit_types"] = {"OPD": "Z"}
    data["surprise"] = 1
    with pytest.raises(ConfigError) as err:
        parse_mapping(data, base_dir=tmp_path)
    text = err.value.message
    for fragment in (
        "insurance_number: Value error, set exactly one",
        f"concepts.{U}.category",
        f"concepts.{U}.price",
        "visit_types.OPD",
        "surprise: Extra inputs",
    ):
        assert fragment in text, text


def test_semantic_problems(tmp_path: Path) -> None:
    (tmp_path / "icd.csv").write_text("# provenance\ncode,name\nA09,x\n")
    data = minimal()
    data["facilities"] = {"not-a-uuid": {"code": "F"}, U: {"code": "F" * 40}}
    data["icd10"] = {"known_codes_file": "icd.csv", "overrides": {U: "E05"}}
    with pytest.raises(ConfigError) as err:
        parse_mapping(data, base_dir=tmp_path)
    text = err.value.message
    assert "facilities.not-a-uuid: key must be a uuid" in text
    assert f"facilities.{U}.code: prefix + facility code too long" in text
    assert f"icd10.overrides.{U}: 'E05' is not in the openIMIS ICD list" in text


def test_missing_known_codes_file(tmp_path: Path) -> None:
    data = minimal()
    data["icd10"] = {"known_codes_file": "nope.csv"}
    with pytest.raises(ConfigError, match=r"icd10.known_codes_file"):
        parse_mapping(data, base_dir=tmp_path)


def test_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("openimis: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_mapping(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_mapping(tmp_path / "missing.yaml")
