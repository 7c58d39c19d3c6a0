"""The clerk's words: every reason, rejection and state has them, and details name the items."""

from __future__ import annotations

from cdc_claims.desk.words import (
    REASON_WORDS,
    REJECTION_WORDS,
    STATE_WORDS,
    HeldWords,
    Mentions,
    held_words,
    mentioned,
    rejection_code,
    rejection_words,
    state_words,
)
from cdc_claims.errors import HELD_REASONS
from cdc_claims.lifecycle import State
from cdc_claims.reply.normalize import REJECTION_REASONS

DRUG = "9d7437a9-3f10-11e4-adec-0800271c1b75"
DRUG_CONCEPT = "71617AAA-AAAA-AAAA-AAAA-AAAAAAAAAAAA"
LAB_CONCEPT = "c51e2a8c-3f10-11e4-adec-0800271c1b75"
ENCOUNTER = "22d6ed56-3d07-40a1-8131-f5824ad857a1"
ORDER = "45853c34-4ff3-493c-81cd-44af5cdd3318"
LAB_ORDER = "3ddf4ba8-3fa2-49c5-8fa1-d6b6564e9a4a"
LOCATION = "c58e12ed-3f12-11e4-adec-0800271c1b75"
VISIT_LOCATION = "c1e42932-3f10-11e4-adec-0800271c1b75"

# the detail mapping.apply writes for unmapped lines (its _describe)
UNMAPPED = (
    f"3 unmapped: drug order {ORDER} (drug {DRUG}, concept {DRUG_CONCEPT}); "
    f"lab {LAB_ORDER} (concept {LAB_CONCEPT}); consultation of encounter {ENCOUNTER}"
)


def test_every_held_reason_rejection_and_state_has_words() -> None:
    assert set(REASON_WORDS) == set(HELD_REASONS)
    assert set(REJECTION_WORDS) == set(REJECTION_REASONS)
    assert set(STATE_WORDS) == set(State)
    assert all(missing and todo for missing, todo in REASON_WORDS.values())


def test_missing_insurance_number_says_where_to_add_it() -> None:
    words = held_words("uninsured", "patient 73cf0ae3-975e-42e5-a5e5-84a975cef5b7 has no insurance number")
    assert words is not None
    assert words.missing == "No insurance number"
    assert "Registration (patient identifier)" in words.todo
    assert "Re-run" in words.todo
    assert words.items == ()  # the patient uuid is not repeated to the clerk


def test_unmapped_lines_are_named_from_the_looked_up_names() -> None:
    names = {DRUG: "Paracetamol 500 mg", LAB_CONCEPT: "Haemoglobin", ENCOUNTER: "Consultation"}
    words = held_words("unmapped_line", UNMAPPED, names)
    assert words == HeldWords(
        "A drug, test or service has no openIMIS code",
        "Add it to the mapping file, then press Re-run",
        (
            f"Drug Paracetamol 500 mg has no openIMIS item: add it to the mapping file (drugs: {DRUG}), "
            "then press Re-run",
            f"Lab test Haemoglobin has no openIMIS service: add it to the mapping file (concepts: {LAB_CONCEPT}), "
            "then press Re-run",
            "The Consultation consultation has no openIMIS service: add a rule to the mapping file (consultations), "
            "then press Re-run",
        ),
    )


def test_an_unnamed_item_falls_back_to_its_uuid_and_a_drug_without_drug_to_its_concept() -> None:
    detail = f"1 unmapped: drug order {ORDER} (drug None, concept {DRUG_CONCEPT})"
    words = held_words("unmapped_line", detail, {})
    assert words is not None
    (item,) = words.items
    assert item.startswith(f"Drug {DRUG_CONCEPT} has no openIMIS item")
    assert f"(concepts: {DRUG_CONCEPT})" in item


def test_mentions_name_what_the_store_must_look_up() -> None:
    assert mentioned("unmapped_line", UNMAPPED) == Mentions(
        drugs=frozenset({DRUG}),
        concepts=frozenset({DRUG_CONCEPT, LAB_CONCEPT}),
        encounters=frozenset({ENCOUNTER}),
    )
    facility = f"encounter {ENCOUNTER}: location {LOCATION} (visit location {VISIT_LOCATION}) has no openIMIS facility"
    assert mentioned("unmapped_facility", facility) == Mentions(locations=frozenset({LOCATION, VISIT_LOCATION}))
    assert mentioned("uninsured", "patient x has no insurance number") == Mentions()
    assert mentioned(None, None) == Mentions()


def test_unmapped_facility_names_the_location_and_its_visit_location() -> None:
    detail = f"encounter {ENCOUNTER}: location {LOCATION} (visit location {VISIT_LOCATION}) has no openIMIS facility"
    words = held_words("unmapped_facility", detail, {LOCATION: "OPD-1", VISIT_LOCATION: "Ganiyari"})
    assert words is not None
    assert words.items == (
        "Location OPD-1 (visit location Ganiyari) has no openIMIS health facility: "
        "add it to the mapping file (facilities)",
    )
    nowhere = held_words("unmapped_facility", f"encounter {ENCOUNTER}: no location has no openIMIS facility")
    assert nowhere is not None
    assert nowhere.items == ("The encounter has no location: set one in Bahmni, then press Re-run",)


def test_no_diagnosis_explains_each_dropped_diagnosis_once() -> None:
    dropped = "a (non_coded); b (provisional); c (unknown_to_openimis:Z99.9); d (non_coded)"
    detail = f"encounter {ENCOUNTER}: diagnoses: {dropped}"
    words = held_words("no_diagnosis", detail)
    assert words is not None
    assert words.items == (
        "A diagnosis was typed as free text: choose a coded diagnosis instead",
        "A diagnosis is only provisional: openIMIS takes confirmed diagnoses",
        "ICD-10 code Z99.9 is not in openIMIS's list: choose another code, or ask for a mapping override",
    )
    none = held_words("no_diagnosis", f"encounter {ENCOUNTER}: diagnoses: none recorded")
    assert none is not None
    assert none.items == ("No diagnosis is recorded: add one in the consultation",)


def test_openimis_refusal_quotes_openimis() -> None:
    words = held_words("refused_by_openimis", "Claim item code 'X9' not found")
    assert words is not None
    assert words.items == ("openIMIS said: Claim item code 'X9' not found",)


def test_no_reason_no_words_and_an_unknown_reason_still_reads() -> None:
    assert held_words(None, "whatever") is None
    unknown = held_words("brand_new_reason", None)
    assert unknown is not None
    assert unknown.missing == "Brand new reason"


def test_rejection_reasons_in_words() -> None:
    assert rejection_words("7 FAMILY").startswith("The patient has no valid insurance policy")
    assert rejection_words("3 NO PRODUCT FOUND") == "Not covered by the patient's insurance product"
    assert rejection_words("-1 REJECTED BY MEDICAL OFFICER") == "Rejected by the scheme's medical officer on review"
    # the iclm writer marks every line of a wholly rejected claim "-1 <the claim's reason>"
    assert rejection_words("-1 7 FAMILY") == rejection_words("7 FAMILY")
    assert rejection_words("-1 claim rejected") == "The whole claim was rejected (claim rejected)"
    assert rejection_words("42 SOMETHING NEW") == "Rejected by openIMIS (reason 42: SOMETHING NEW)"
    assert rejection_words("not a code") == "Rejected by openIMIS: not a code"
    assert rejection_words(None) == ""


def test_rejection_codes_are_read_through_the_writers_mark() -> None:
    assert rejection_code("7 FAMILY") == 7
    assert rejection_code("-1 7 FAMILY") == 7
    assert rejection_code("-2 REJECTED BY AI EVALUATION") == -2
    assert rejection_code("free text") is None


def test_state_words() -> None:
    assert state_words("held") == "Held: needs a fix before it can be sent"
    assert state_words(State.VALUATED) == "Valuated: the amount is final"
    assert state_words("no_such_state") == "no_such_state"
