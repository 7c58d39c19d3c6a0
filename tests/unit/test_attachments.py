"""Documents sent with a claim: the mapping rule, the document store, the FHIR rendering, the holds."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from test_claim_service import UNIT, World, service
from test_mapping_apply import CREATED, ctx
from test_mapping_apply import mapping as _mapping_fixture  # noqa: F401  (the fixture)

from cdc_claims.assemble.documents import LocalDocumentFiles
from cdc_claims.assemble.model import ClaimAttachment, ClaimContext, ClaimDraft, DocumentRef
from cdc_claims.claim.corrections import follow_up
from cdc_claims.claim.fhir_claim import render_claim, without_attachment_data
from cdc_claims.claim.render import FhirRenderer
from cdc_claims.errors import ClaimRenderError, ConfigError, NotClaimable, SourceUnavailable
from cdc_claims.lifecycle import State
from cdc_claims.mapping.apply import build_draft
from cdc_claims.mapping.model import ClaimMapping, parse_mapping
from cdc_claims.mapping.reading import reader_config

DISCHARGE = "c389d0ea-3f10-11e4-adec-0800271c1b75"
LAB_REPORT = "0b7c7a6e-7d0b-4e0e-9a54-5c1f3c8a9c11"
T1 = datetime(2026, 11, 21, 14, 0)


def dumped(mapping: ClaimMapping) -> dict[str, Any]:
    data = mapping.model_dump(mode="json", exclude_none=True)
    data["icd10"].pop("known_codes_file")  # relative to the fixture's directory
    return data


def with_attachments(mapping: ClaimMapping, **section: Any) -> ClaimMapping:
    data = dumped(mapping)
    data["attachments"] = {
        "documents": [
            {"concept": DISCHARGE, "title": "Discharge summary", "required": True},
            {"concept": "Lab Report"},
        ],
        **section,
    }
    return parse_mapping(data, base_dir=Path("."))


def doc(obs: str, concept: str = DISCHARGE, name: str = "Discharge Summary", path: str = "100/7.pdf") -> DocumentRef:
    return DocumentRef(obs, "enc-doc", concept, name, "documents", path, T1)


@pytest.fixture
def mapping(_mapping_fixture: ClaimMapping) -> ClaimMapping:  # noqa: F811
    return with_attachments(_mapping_fixture)


# ---- the mapping rule ------------------------------------------------------------------


def test_the_attachments_section_is_validated_with_every_problem_named(_mapping_fixture: ClaimMapping) -> None:  # noqa: F811
    with pytest.raises(ConfigError) as err:
        with_attachments(_mapping_fixture, max_bytes=10, max_total_bytes=5)
    assert "max_total_bytes must be at least max_bytes" in str(err.value)
    data = dumped(_mapping_fixture)
    data["attachments"] = {"documents": [{"concept": "X"}, {"concept": "X"}]}
    with pytest.raises(ConfigError, match=r"attachments\.documents\.1: 'X' is listed twice"):
        parse_mapping(data, base_dir=Path("."))
    data["attachments"] = {"documents": []}
    with pytest.raises(ConfigError, match=r"attachments\.documents"):
        parse_mapping(data, base_dir=Path("."))


def test_the_reader_is_told_which_concepts_to_look_for(mapping: ClaimMapping, _mapping_fixture: ClaimMapping) -> None:  # noqa: F811
    config = reader_config(mapping)
    assert config.document_concepts == (DISCHARGE, "Lab Report") and config.document_concept == "Document"
    assert reader_config(_mapping_fixture).document_concepts == ()


def test_documents_are_attached_in_the_mapping_order_with_their_titles(mapping: ClaimMapping) -> None:
    c = ctx(
        documents=(
            doc("o-lab1", LAB_REPORT, "Lab Report", "100/1-lab.PNG"),
            doc("o-dis", path="100/2-dis.pdf"),
            doc("o-lab2", LAB_REPORT, "Lab Report", "100/3-lab.jpeg"),
            doc("o-other", "9d8c7b6a-0000-4000-8000-000000000000", "CHEST AP", "100/4.jpeg"),
        )
    )
    draft = build_draft(c, mapping, created=CREATED, revision=0)
    assert [(a.obs_uuid, a.title, a.content_type) for a in draft.attachments] == [
        ("o-dis", "Discharge summary", "application/pdf"),
        ("o-lab1", "Lab Report (1)", "image/png"),
        ("o-lab2", "Lab Report (2)", "image/jpeg"),
    ]
    assert draft.attachments[0].creation == T1.date() and draft.attachments[0].path == "100/2-dis.pdf"
    # the documents are not the claim's content: an upload does not make a submitted claim "changed"
    assert (
        draft.content_hash
        == build_draft(ctx(documents=(doc("o-dis"),)), mapping, created=CREATED, revision=0).content_hash
    )


def test_a_required_document_missing_holds_the_claim_and_an_optional_one_does_not(mapping: ClaimMapping) -> None:
    with pytest.raises(NotClaimable) as err:
        build_draft(ctx(documents=(doc("o-lab", LAB_REPORT, "Lab Report"),)), mapping, created=CREATED, revision=0)
    assert err.value.reason == "attachment_missing"
    assert "'Discharge summary'" in err.value.detail and DISCHARGE in err.value.detail
    draft = build_draft(ctx(documents=(doc("o-dis"),)), mapping, created=CREATED, revision=0)
    assert [a.obs_uuid for a in draft.attachments] == ["o-dis"]


def test_a_document_openimis_would_not_keep_is_held_not_dropped(mapping: ClaimMapping) -> None:
    with pytest.raises(NotClaimable) as err:
        build_draft(ctx(documents=(doc("o-dis", path="100/2-dis.tiff"),)), mapping, created=CREATED, revision=0)
    assert err.value.reason == "attachment_unsupported" and ".tiff" in err.value.detail


def test_without_an_attachments_section_documents_are_ignored(_mapping_fixture: ClaimMapping) -> None:  # noqa: F811
    draft = build_draft(ctx(documents=(doc("o-dis"),)), _mapping_fixture, created=CREATED, revision=0)
    assert draft.attachments == ()


# ---- the document store ----------------------------------------------------------------


def attachment(path: str, obs: str = "o-1", store: Any = "documents") -> ClaimAttachment:
    return ClaimAttachment(obs, "Discharge summary", "application/pdf", store, path, date(2026, 11, 21))


def test_files_are_read_from_the_store_within_the_limits(tmp_path: Path) -> None:
    (tmp_path / "100").mkdir()
    (tmp_path / "100" / "a.pdf").write_bytes(b"%PDF-1.4 a")
    (tmp_path / "100" / "b.pdf").write_bytes(b"%PDF-1.4 bb")
    files = LocalDocumentFiles(tmp_path, None, max_bytes=11, max_total_bytes=30)
    assert files.load([attachment("100/a.pdf"), attachment("100/b.pdf")]) == (b"%PDF-1.4 a", b"%PDF-1.4 bb")
    with pytest.raises(NotClaimable) as err:
        LocalDocumentFiles(tmp_path, None, max_bytes=10, max_total_bytes=30).load([attachment("100/b.pdf")])
    assert err.value.reason == "attachment_too_large" and "o-1" in err.value.detail
    with pytest.raises(NotClaimable) as err:
        LocalDocumentFiles(tmp_path, None, max_bytes=11, max_total_bytes=15).load(
            [attachment("100/a.pdf"), attachment("100/b.pdf", "o-2")]
        )
    assert err.value.reason == "attachment_too_large" and "add up" in err.value.detail and "o-2" in err.value.detail


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.pdf"
    with big.open("wb") as fh:  # sparse: 3 GiB on paper, nothing on disk
        fh.truncate(3 * 1024**3)
    reads: list[int] = []
    real_fdopen = os.fdopen

    class Spy:
        def __init__(self, fh: Any) -> None:
            self.fh = fh

        def __enter__(self) -> Spy:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

        def fileno(self) -> int:
            return int(self.fh.fileno())

        def read(self, n: int = -1) -> bytes:
            reads.append(n)
            return bytes(self.fh.read(n))

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Spy(real_fdopen(fd, mode)))
    with pytest.raises(NotClaimable) as err:
        LocalDocumentFiles(tmp_path, None, max_bytes=1024, max_total_bytes=2048).load([attachment("big.pdf")])
    assert err.value.reason == "attachment_too_large" and "3072.0 MiB" in err.value.detail
    assert reads == []
    big.write_bytes(b"%PDF small")
    assert LocalDocumentFiles(tmp_path, None, max_bytes=1024, max_total_bytes=2048).load([attachment("big.pdf")])
    assert reads == [1025], "at most max_bytes + 1 bytes are read, whatever the file says"


def test_a_path_that_leaves_the_store_is_never_read(tmp_path: Path) -> None:
    store, outside = tmp_path / "store", tmp_path / "secret.pdf"
    store.mkdir()
    outside.write_bytes(b"not yours")
    (store / "link.pdf").symlink_to(outside)
    files = LocalDocumentFiles(store, None, max_bytes=100, max_total_bytes=100)
    for path in ("../secret.pdf", str(outside), "link.pdf"):
        with pytest.raises(NotClaimable) as err:
            files.load([attachment(path)])
        assert err.value.reason == "attachment_missing" and "leaves the document store" in err.value.detail, path


def test_a_missing_or_empty_file_is_missing_and_an_unmounted_store_is_retriable(tmp_path: Path) -> None:
    (tmp_path / "empty.pdf").write_bytes(b"")
    files = LocalDocumentFiles(tmp_path, None, max_bytes=100, max_total_bytes=100)
    for path, words in (("gone.pdf", "not in the document store"), ("empty.pdf", "empty")):
        with pytest.raises(NotClaimable) as err:
            files.load([attachment(path)])
        assert err.value.reason == "attachment_missing" and words in err.value.detail
    with pytest.raises(NotClaimable, match="no complex_obs directory"):
        files.load([attachment("x.png", store="complex_obs")])
    with pytest.raises(SourceUnavailable):
        LocalDocumentFiles(tmp_path / "unmounted", None, max_bytes=1, max_total_bytes=1).load([attachment("a.pdf")])


def test_complex_obs_files_come_from_their_own_directory(tmp_path: Path) -> None:
    (tmp_path / "complex").mkdir()
    (tmp_path / "complex" / "scan.png").write_bytes(b"\x89PNG")
    files = LocalDocumentFiles(tmp_path / "docs", tmp_path / "complex", max_bytes=100, max_total_bytes=100)
    assert files.load([attachment("scan.png", store="complex_obs")]) == (b"\x89PNG",)


# ---- the Claim and its audit copy ------------------------------------------------------


def drafted(mapping: ClaimMapping) -> ClaimDraft:
    return build_draft(ctx(documents=(doc("o-dis"),)), mapping, created=CREATED, revision=0)


def test_a_document_goes_as_supporting_info_in_the_form_openimis_keeps(mapping: ClaimMapping) -> None:
    draft = replace(drafted(mapping), explanation="Supplement to claim X")
    claim = render_claim(draft, files=[b"%PDF-1.4 discharge"])
    info = claim["supportingInfo"]
    assert [i["sequence"] for i in info] == [1, 2]
    assert info[0]["category"]["coding"][0]["code"] == "explanation"
    assert info[1]["category"]["coding"][0]["code"] == "attachment"
    assert info[1]["valueAttachment"] == {
        "contentType": "application/pdf",
        "data": base64.b64encode(b"%PDF-1.4 discharge").decode(),
        "title": "Discharge summary",
        "creation": "2026-11-21",
    }  # no "hash": openIMIS 1.10 answers any hash with a 500
    with pytest.raises(ClaimRenderError, match="1 attachment"):
        render_claim(draft)


def test_the_audit_copy_says_which_document_went_without_holding_it(mapping: ClaimMapping) -> None:
    claim = render_claim(drafted(mapping), files=[b"%PDF-1.4 discharge"])
    slim = without_attachment_data(claim)
    value = slim["supportingInfo"][0]["valueAttachment"]
    assert "data" not in value and value["size"] == 18
    assert value["hash"] == base64.b64encode(hashlib.sha1(b"%PDF-1.4 discharge").digest()).decode()
    assert "data" in claim["supportingInfo"][0]["valueAttachment"], "the Claim posted is not changed"
    plain = render_claim(replace(drafted(mapping), attachments=()))
    assert without_attachment_data(plain) is plain


class Store:
    def __init__(self, data: bytes = b"%PDF doc", error: NotClaimable | None = None) -> None:
        self.data, self.error, self.loads = data, error, 0

    def load(self, attachments: Any) -> tuple[bytes, ...]:
        self.loads += 1
        if self.error is not None:
            raise self.error
        return tuple(self.data for _ in attachments)


def test_the_renderer_reads_the_files_at_the_last_moment_and_audits_without_them(mapping: ClaimMapping) -> None:
    store = Store()
    renderer = FhirRenderer(store)
    draft = drafted(mapping)
    claim = renderer.claim(draft)
    assert store.loads == 1 and claim["supportingInfo"][0]["valueAttachment"]["data"]
    bundle = renderer.audit_bundle(ctx(documents=(doc("o-dis"),)), draft, claim)
    text = str(bundle)
    assert base64.b64encode(b"%PDF doc").decode() not in text and "'size': 8" in text
    with pytest.raises(NotClaimable, match="CDC_CLAIMS_DOCUMENTS__DIR"):
        FhirRenderer().claim(draft)
    assert "supportingInfo" not in FhirRenderer().claim(replace(draft, attachments=()))


def test_follow_up_claims_carry_no_documents(mapping: ClaimMapping) -> None:
    draft = drafted(mapping)
    supplement = follow_up(
        draft, draft.lines[:1], kind="supplement", original_code=draft.code, related_code=draft.code, seq=1,
        created=CREATED,
    )  # fmt: skip
    assert supplement.attachments == () and draft.attachments


# ---- the claim service -----------------------------------------------------------------


class DocWorld(World):
    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store

    def build(self, c: ClaimContext, *, created: date, revision: int) -> ClaimDraft:
        draft = super().build(c, created=created, revision=revision)
        return replace(draft, attachments=(attachment("100/a.pdf"),))

    def claim(self, draft: ClaimDraft) -> dict[str, Any]:
        files = self.store.load(draft.attachments) if draft.attachments else ()
        return {**super().claim(draft), "files": len(files)}


def test_a_document_too_large_holds_the_claim_before_anything_is_sent_and_a_fix_sends_it() -> None:
    store = Store(error=NotClaimable("attachment_too_large", "document obs o-1 is 9.0 MiB, the limit is 5.0 MiB"))
    w = DocWorld(store)
    result = service(w).process(UNIT)
    assert (result.outcome, result.reason) == ("held", "attachment_too_large")
    row = w.ledger[("encounter", "enc-1")]
    assert (row.state, row.reason) == (State.HELD, "attachment_too_large") and "9.0 MiB" in (row.detail or "")
    assert not w.posts and w.held[0]["reason"] == "attachment_too_large"
    store.error = None  # a smaller scan uploaded
    assert service(w).process(UNIT).outcome == "submitted"
    assert w.posts[-1]["files"] == 1


def test_an_in_doubt_post_is_completed_even_if_its_document_went_missing() -> None:
    store = Store(error=NotClaimable("attachment_missing", "document obs o-1: its file is not in the document store"))
    w = DocWorld(store)
    w.in_openimis.add("RAHOS001-enc-1")  # the earlier POST (with its document) got through
    from cdc_claims.ledger.model import LedgerEntry

    w.ledger[("encounter", "enc-1")] = LedgerEntry(
        "encounter", "enc-1", State.SUBMITTING, "RAHOS001-enc-1", 0, "h1", attempts=1
    )
    result = service(w).process(UNIT)
    assert result.outcome == "replayed" and w.ledger[("encounter", "enc-1")].state is State.CHECKED
    assert w.posts[-1]["files"] == 0
