"""build_draft: every hold reason, claim code, period, references and content hash."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from cdc_claims.assemble.model import (
    BillableLine,
    ClaimContext,
    Diagnosis,
    Encounter,
    ItemCategory,
    Location,
    Patient,
    Provider,
    Visit,
)
from cdc_claims.assemble.selection import derived_line_uuid
from cdc_claims.errors import NotClaimable
from cdc_claims.mapping.apply import build_draft, claim_code
from cdc_claims.mapping.model import ClaimMapping, PricedRef, ReferenceTerms, parse_mapping

LOC = "c58e12ed-3f12-11e4-adec-0800271c1b75"
VISIT_LOC = "c1e42932-3f10-11e4-adec-0800271c1b75"
HF_UUID = "d8a25f21-f36a-4d4d-9e58-1db8ffbe7036"
ADMIN_UUID = "598e43ca-9977-4f4b-a678-992528ce3454"
DOCTOR = "c1c26908-3f10-11e4-adec-0800271c1b75"
LAB = "f2af3cd5-634f-4b17-97c5-d5cd52ee2867"
DRUG = "6f0242cf-1cf2-4c0d-a522-e8628f0cd988"
DRUG_CONCEPT = "251a17f9-c229-4aee-9555-9bf7620b2a5a"
PROC = "d44c70cb-25c8-4407-976b-a1383dbca3d5"
DX_CONCEPT = "de617543-4e14-11e4-8a57-0800271c1b75"
ENC_TYPE = "81852aee-3f10-11e4-adec-0800271c1b75"
ENC = "20ed758c-09ff-4b02-8a06-228f6ddfacd2"
T0 = datetime(2026, 11, 20, 9, 30)
CREATED = date(2026, 11, 25)


@pytest.fixture
def mapping(tmp_path: Path) -> ClaimMapping:
    (tmp_path / "icd.csv").write_text("# test list\ncode,name\nA09,x\nE0590,y\nA499,z\n")
    return parse_mapping(
        {
            "openimis": {
                "claim_admin_default": {"code": "RHOS0011", "uuid": ADMIN_UUID},
                "insuree_uuids": {"070707081": "7b00e6ec-e0f5-4d07-a8e0-ec00a4160e73"},
            },
            "insurance_number": {"patient_identifier_type": "ExternalId"},
            "icd10": {"known_codes_file": "icd.csv", "strip_dots": True},
            "facilities": {VISIT_LOC: {"code": "RAHOS001", "uuid": HF_UUID}},
            "visit_types": {"EMERGENCY": "E"},
            "concepts": {
                LAB: {"category": "service", "code": "I125", "price": 650},
                PROC: {"category": "service", "code": "G34", "price": 42000},
            },
            "concept_terms": [
                {"source": "SNOMED", "term": "123", "category": "service", "code": "I113", "price": 1250}
            ],
            "drugs": {DRUG: {"code": "0171", "price": 35}},
            "consultations": [
                {
                    "encounter_type": "Consultation",
                    "service": {"code": "A1", "price": 400},
                    "concept": "81d6e852-3f10-11e4-adec-0800271c1b75",
                }
            ],
        },
        base_dir=tmp_path,
    )


def ctx(**over: object) -> ClaimContext:
    loc = Location(8, LOC, "OPD-1", VISIT_LOC)
    enc = Encounter(5, ENC, ENC_TYPE, "Consultation", T0, False, loc, (Provider(2, DOCTOR),))
    visit = Visit(1, "72588661-147f-4050-9694-2e663b1e7535", "vt", "OPD", T0, datetime(2026, 11, 22, 8), False, loc)
    base = ClaimContext(
        unit_kind="encounter",
        unit_uuid=ENC,
        patient=Patient(74, "1dfff08c-141b-46df-b6a2-6b69080a5000", "F", None, "070707081"),
        visit=visit,
        encounters=(enc,),
        diagnoses=(Diagnosis("obs", "g1", ENC, 442, DX_CONCEPT, "E05.90", "CONFIRMED", True, T0),),
        lines=(
            BillableLine("lab", "o-lab", ENC, 3572, LAB, Decimal(1), T0),
            BillableLine("drug", "o-drug", ENC, 1643, DRUG_CONCEPT, Decimal("2.0"), T0, drug_id=251, drug_uuid=DRUG),
            BillableLine("consultation", derived_line_uuid(ENC, "A1"), ENC, 0, ENC_TYPE, Decimal(1), T0),
        ),
    )
    return replace(base, **over)  # type: ignore[arg-type]


def held(c: ClaimContext, mapping: ClaimMapping) -> NotClaimable:
    with pytest.raises(NotClaimable) as err:
        build_draft(c, mapping, created=CREATED, revision=0)
    return err.value


def test_happy_path(mapping: ClaimMapping) -> None:
    d = build_draft(ctx(), mapping, created=CREATED, revision=0)
    assert d.code == "RAHOS001-20ed758c09ff4b028a06228f6ddfacd2"
    assert d.insuree == "7b00e6ec-e0f5-4d07-a8e0-ec00a4160e73"
    assert (d.facility, d.facility_code, d.enterer) == (HF_UUID, "RAHOS001", ADMIN_UUID)
    assert d.visit_type == "O"
    assert (d.period_start, d.period_end) == (date(2026, 11, 20), date(2026, 11, 20))
    assert [x.icd10 for x in d.diagnoses] == ["E0590"]
    assert [(x.sequence, x.category, x.code, x.reference, x.quantity, x.unit_price) for x in d.lines] == [
        (1, "service", "A1", "A1", Decimal(1), Decimal(400)),
        (2, "item", "0171", "0171", Decimal(2), Decimal(35)),
        (3, "service", "I125", "I125", Decimal(1), Decimal(650)),
    ]
    assert d.total == Decimal(400 + 70 + 650)
    assert (d.encounter_id, d.visit_id, d.location_id, d.provider_id) == (5, 1, 8, 2)
    assert len(d.content_hash) == 64


def test_visit_mode_period_and_visit_type(mapping: ClaimMapping) -> None:
    c = ctx(unit_kind="visit", unit_uuid="72588661-147f-4050-9694-2e663b1e7535")
    c = replace(c, visit=replace(c.visit, type_name="EMERGENCY"))
    d = build_draft(c, mapping, created=CREATED, revision=0)
    assert (d.period_start, d.period_end, d.visit_type) == (date(2026, 11, 20), date(2026, 11, 22), "E")
    assert d.encounter_id is None and d.code == "RAHOS001-72588661147f405096942e663b1e7535"


def test_hash_is_stable_and_content_sensitive(mapping: ClaimMapping) -> None:
    a = build_draft(ctx(), mapping, created=CREATED, revision=0)
    b = build_draft(ctx(), mapping, created=date(2027, 1, 1), revision=3)  # created and revision do not count
    assert a.content_hash == b.content_hash and a.code != b.code
    c = ctx()
    c = replace(c, lines=(replace(c.lines[1], quantity=Decimal("2.00")), c.lines[0], c.lines[2]))
    assert build_draft(c, mapping, created=CREATED, revision=0).content_hash == a.content_hash  # 2.0 == 2.00, order
    c = replace(c, lines=(replace(c.lines[0], quantity=Decimal(3)), *c.lines[1:]))
    assert build_draft(c, mapping, created=CREATED, revision=0).content_hash != a.content_hash


@pytest.mark.parametrize("prefix", ["", "BAHMNI-", "X" * 20])
@pytest.mark.parametrize("facility", ["RAHOS001", "F" * 13])
@pytest.mark.parametrize("revision", [0, 1, 42, 12345])
def test_claim_code_length(prefix: str, facility: str, revision: int) -> None:
    code = claim_code(prefix, facility, ENC, revision)
    assert len(code) <= 50
    assert code.startswith(f"{prefix}{facility}-20ed758c")
    assert code.endswith(f"-R{revision}") == (revision > 0)
    assert code == claim_code(prefix, facility, ENC, revision)


def test_claim_code_full_length_when_room() -> None:
    assert claim_code("BAHMNI-", "RAHOS001", ENC, 0) == "BAHMNI-RAHOS001-20ed758c09ff4b028a06228f6ddfacd2"
    assert claim_code("BAHMNI-", "RAHOS001", ENC, 2) == "BAHMNI-RAHOS001-20ed758c09ff4b028a06228f6ddfacd-R2"


def test_voided(mapping: ClaimMapping) -> None:
    c = ctx()
    assert held(replace(c, encounters=(replace(c.encounters[0], voided=True),), lines=()), mapping).reason == "voided"
    assert held(replace(c, visit=replace(c.visit, voided=True)), mapping).reason == "voided"


def test_uninsured(mapping: ClaimMapping) -> None:
    c = ctx()
    assert held(replace(c, patient=replace(c.patient, insurance_number=None)), mapping).reason == "uninsured"


def test_unmapped_facility(mapping: ClaimMapping) -> None:
    c = ctx()
    other = Location(99, "99999999-9999-9999-9999-999999999999", "Elsewhere", None)
    c = replace(c, encounters=(replace(c.encounters[0], location=other),), visit=replace(c.visit, location=other))
    err = held(c, mapping)
    assert err.reason == "unmapped_facility" and other.uuid in err.detail


def test_facility_from_the_visit_location(mapping: ClaimMapping) -> None:
    assert build_draft(ctx(), mapping, created=CREATED, revision=0).facility_code == "RAHOS001"  # LOC itself unmapped


def test_no_billable_lines(mapping: ClaimMapping) -> None:
    assert held(ctx(lines=()), mapping).reason == "no_billable_lines"


def test_unmapped_lines_are_all_listed(mapping: ClaimMapping) -> None:
    c = ctx()
    extra = (
        BillableLine("lab", "o-x", ENC, 7, "77777777-7777-7777-7777-777777777777", Decimal(1), T0),
        BillableLine(
            "drug",
            "o-y",
            ENC,
            8,
            "88888888-8888-8888-8888-888888888888",
            Decimal(5),
            T0,
            drug_uuid="66666666-6666-6666-6666-666666666666",
        ),
    )
    err = held(replace(c, lines=c.lines + extra), mapping)
    assert err.reason == "unmapped_line"
    for fragment in ("2 unmapped", "o-x", "77777777-7777", "o-y", "66666666-6666"):
        assert fragment in err.detail


def test_concept_terms_and_procedure_obs(mapping: ClaimMapping) -> None:
    c = ctx()
    lines = (
        BillableLine(
            "radiology",
            "o-r",
            ENC,
            9,
            "99999999-0000-0000-0000-000000000000",
            Decimal(1),
            T0,
            concept_codes=(("SNOMED", "123"),),
        ),
        BillableLine("procedure_obs", "obs-p", ENC, 2945, PROC, Decimal(1), T0),
    )
    d = build_draft(replace(c, lines=lines), mapping, created=CREATED, revision=0)
    assert sorted(x.code for x in d.lines) == ["G34", "I113"]


def test_no_diagnosis(mapping: ClaimMapping) -> None:
    c = ctx()
    for dxs in (
        (),
        (replace(c.diagnoses[0], icd10="E11.9"),),  # not in openIMIS's list
        (replace(c.diagnoses[0], certainty="PROVISIONAL"),),
        (replace(c.diagnoses[0], concept_id=None, concept_uuid=None, icd10=None),),  # non-coded
    ):
        assert held(replace(c, diagnoses=dxs), mapping).reason == "no_diagnosis"


def test_override_and_max_five(mapping: ClaimMapping) -> None:
    c = ctx()
    m = mapping.model_copy(update={"icd10": mapping.icd10.model_copy(update={"overrides": {DX_CONCEPT: "A09"}})})
    m._known_icd = mapping.known_icd_codes
    assert [x.icd10 for x in build_draft(c, m, created=CREATED, revision=0).diagnoses] == ["A09"]


class Book:
    """openIMIS's catalogue as the reference_terms rule sees it: (category, code) -> (uuid, facility price)."""

    def __init__(self, ready: bool = True) -> None:
        self.ready = ready
        self.asked: list[tuple[str, str | None, str]] = []
        self.known = {
            ("item", "0001"): ("71efb78b-64ee-4a68-be29-87daf566eb20", 10),
            ("service", "I42"): (HF_UUID, 3250),
        }

    def lookup(
        self, facility_code: str, category: ItemCategory | None, code: str
    ) -> tuple[ItemCategory, PricedRef] | None:
        from cdc_claims.errors import SourceUnavailable

        self.asked.append((facility_code, category, code))
        if not self.ready:
            raise SourceUnavailable("openIMIS catalogue not read yet")
        for kind in (category,) if category else ("service", "item"):
            if (kind, code) in self.known:
                uuid, price = self.known[(kind, code)]
                return kind, PricedRef(code=code, uuid=uuid, price=Decimal(price))
        return None


UNLISTED_DRUG = "55555555-5555-5555-5555-555555555555"
XRAY = "44444444-4444-4444-4444-444444444444"


def _by_terms(mapping: ClaimMapping) -> ClaimMapping:
    return mapping.model_copy(update={"reference_terms": ReferenceTerms(source="ExternalCode")})


def test_reference_terms_map_drugs_by_drug_reference_map_and_concepts_with_the_catalogue_price_and_uuid(
    mapping: ClaimMapping,
) -> None:
    c = ctx()
    lines = (
        *c.lines,
        BillableLine("drug", "o-d2", ENC, 30, DRUG_CONCEPT, Decimal(3), T0, drug_uuid=UNLISTED_DRUG,
                     drug_codes=(("ExternalCode", "0001"),)),
        BillableLine("radiology", "o-x", ENC, 31, XRAY, Decimal(1), T0, concept_codes=(("ExternalCode", "I42"),)),
    )  # fmt: skip
    book = Book()
    d = build_draft(replace(c, lines=lines), _by_terms(mapping), created=CREATED, revision=0, codebook=book)
    got = {(x.category, x.code, x.reference, x.unit_price) for x in d.lines}
    assert ("item", "0001", "71efb78b-64ee-4a68-be29-87daf566eb20", Decimal(10)) in got
    assert ("service", "I42", HF_UUID, Decimal(3250)) in got
    assert ("item", "0171", "0171", Decimal(35)) in got  # the explicit drugs entry wins, no look-up
    assert book.asked == [("RAHOS001", "item", "0001"), ("RAHOS001", None, "I42")]


def test_a_reference_term_openimis_does_not_know_is_an_unmapped_line_that_names_it(mapping: ClaimMapping) -> None:
    c = ctx()
    line = BillableLine("drug", "o-d3", ENC, 30, DRUG_CONCEPT, Decimal(1), T0, drug_uuid=UNLISTED_DRUG,
                        drug_codes=(("ExternalCode", "9999"), ("SNOMED", "0001")))  # fmt: skip
    with pytest.raises(NotClaimable) as err:
        build_draft(replace(c, lines=(line,)), _by_terms(mapping), created=CREATED, revision=0, codebook=Book())
    assert err.value.reason == "unmapped_line" and "reference term 9999 unknown to openIMIS" in err.value.detail
    with pytest.raises(NotClaimable):  # without the rule, the same line is simply unmapped
        build_draft(replace(c, lines=(line,)), mapping, created=CREATED, revision=0, codebook=Book())


def test_no_catalogue_yet_makes_a_reference_term_line_wait_not_held(mapping: ClaimMapping) -> None:
    from cdc_claims.errors import SourceUnavailable

    c = ctx()
    line = BillableLine("drug", "o-d4", ENC, 30, DRUG_CONCEPT, Decimal(1), T0, drug_uuid=UNLISTED_DRUG,
                        drug_codes=(("ExternalCode", "0001"),))  # fmt: skip
    with pytest.raises(SourceUnavailable):
        build_draft(
            replace(c, lines=(line,)), _by_terms(mapping), created=CREATED, revision=0, codebook=Book(ready=False)
        )
