"""``check-mapping --openimis``: every mapping entry that disagrees with the live openIMIS.

The mapping names openIMIS codes, uuids and prices by hand; without this the first sign of a
typo is a claim refused (an unknown code or uuid: HTTP 500) or a line rejected (2 NOT IN PRICE
LIST) after it went out. Each entry is compared with the catalogue, per mapped facility, and
each finding says the fix. *Blocking* findings would hold or break claims (unknown code, uuid
of another object, not in the facility's pricelist, priced above it, ICD code openIMIS lacks);
*info* findings do not (priced below the list: openIMIS pays what is asked).
The insuree uuid cache (``openimis.insuree_uuids``) is compared with the uuids openIMIS has for
its CHF ids (:func:`insuree_findings`): a claim names its patient by that uuid.
Pure: the catalogue and the insurees come in read (:mod:`cdc_claims.payer.graphql`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from cdc_claims.mapping.check import REFERENCE_TERM_ITEM, REFERENCE_TERM_LINE, Finding
from cdc_claims.mapping.model import ClaimMapping, OpenImisRef, PricedRef
from cdc_claims.payer.catalogue import Catalogue, Category

_FACILITY = "openimis facility"
INSUREE = "openimis insuree"


@dataclass(frozen=True)
class _Entry:
    path: str  # where in the mapping file: "drugs.<uuid>", "consultations.0.service"
    category: Category
    target: PricedRef


def billable_entries(mapping: ClaimMapping) -> Iterator[_Entry]:
    """Every item or service the mapping can put on a claim, with its YAML path."""
    for key, concept in mapping.concepts.items():
        yield _Entry(f"concepts.{key}", concept.category, concept)
    for i, rule in enumerate(mapping.concept_terms):
        yield _Entry(f"concept_terms.{i} ({rule.source}:{rule.term})", rule.category, rule)
    for key, drug in mapping.drugs.items():
        yield _Entry(f"drugs.{key}", "item", drug)
    for i, consultation in enumerate(mapping.consultations):
        yield _Entry(f"consultations.{i}.service", "service", consultation.service)


def compare(mapping: ClaimMapping, catalogue: Catalogue) -> list[Finding]:
    """The findings, facilities and claim admins first, then lines, then ICD codes."""
    out: list[Finding] = []
    facility_codes: dict[str, list[str]] = {}
    for key, ref in mapping.facilities.items():
        facility_codes.setdefault(ref.code, []).append(key)
        facility = catalogue.facility(ref.code)
        if facility is None:
            out.append(
                _block("openimis facility", f"facilities.{key}", ref.code, "no such health facility in openIMIS")
            )
        elif ref.uuid is not None and ref.uuid != facility.uuid:
            out.append(
                _block(
                    "openimis facility", f"facilities.{key}", ref.code, f"uuid is {ref.uuid}: set it to {facility.uuid}"
                )
            )
    admins = [("openimis.claim_admin_default", mapping.openimis.claim_admin_default)]
    admins += [(f"claim_admins.{key}", ref) for key, ref in mapping.claim_admins.items()]
    for path, ref in admins:
        out += _admin(path, ref, catalogue)

    mapped = [code for code in facility_codes if catalogue.facility(code) is not None]
    for entry in billable_entries(mapping):
        out += _billable(entry, catalogue, mapped)

    for concept, code in mapping.icd10.overrides.items():
        if code not in catalogue.icd_codes:
            out.append(_block("openimis ICD", f"icd10.overrides.{concept}", code, "not in openIMIS's ICD list"))
    known = mapping.known_icd_codes
    if known is not None:
        extra = sorted(known - catalogue.icd_codes)
        if extra:
            shown = ", ".join(extra[:10]) + (" ..." if len(extra) > 10 else "")
            out.append(
                Finding(
                    "blocking",
                    "openimis ICD",
                    "icd10.known_codes_file",
                    f"{len(extra)} code(s)",
                    0,
                    f"in the file but not in openIMIS ({shown}): refresh the file from openIMIS",
                )
            )
    return out


def _admin(path: str, ref: OpenImisRef, catalogue: Catalogue) -> list[Finding]:
    uuid = catalogue.claim_admins.get(ref.code)
    if uuid is None:
        return [_block("openimis claim admin", path, ref.code, "no such claim admin in openIMIS")]
    if ref.uuid is not None and ref.uuid != uuid:
        return [_block("openimis claim admin", path, ref.code, f"uuid is {ref.uuid}: set it to {uuid}")]
    return []


def _billable(entry: _Entry, catalogue: Catalogue, facilities: list[str]) -> list[Finding]:
    target, category = entry.target, entry.category
    topic = f"openimis {category}"
    medical = catalogue.entry(category, target.code)
    if medical is None:
        other: Category = "item" if category == "service" else "service"
        hint = f": it is an openIMIS {other}, set category: {other}" if catalogue.entry(other, target.code) else ""
        kind = "medical item" if category == "item" else "medical service"
        return [_block(topic, entry.path, target.code, f"no such {kind} in openIMIS{hint}")]
    out: list[Finding] = []
    if target.uuid is not None and target.uuid != medical.uuid:
        out.append(_block(topic, entry.path, target.code, f"uuid is {target.uuid}: set it to {medical.uuid}"))
    for code in facilities:
        facility = catalogue.facilities[code]
        price = facility.pricelist(category).get(target.code)
        listed = facility.pricelist_name(category) or "no pricelist"
        if price is None:
            out.append(_block(topic, entry.path, target.code, f"not in {code}'s {category} pricelist ({listed})"))
        elif target.price > price:
            out.append(
                _block(
                    topic,
                    entry.path,
                    target.code,
                    f"price {target.price} above {code}'s pricelist {price}: set price: {price}",
                )
            )
        elif target.price < price:
            out.append(
                Finding(
                    "info",
                    topic,
                    entry.path,
                    target.code,
                    0,
                    f"price {target.price} below {code}'s pricelist {price}: openIMIS pays what is asked",
                )
            )
    return out


def _block(topic: str, path: str, code: str, detail: str) -> Finding:
    return Finding("blocking", topic, path, code, 0, detail)


def reference_term_findings(findings: Iterable[Finding], catalogue: Catalogue) -> list[Finding]:
    """Lines the ``reference_terms`` rule maps (``check-mapping``'s info findings) whose code
    openIMIS does not know: those claims would be held as ``unmapped_line``."""
    out: list[Finding] = []
    for f in findings:
        if f.topic not in (REFERENCE_TERM_ITEM, REFERENCE_TERM_LINE):
            continue
        code = f.detail.rsplit(":", 1)[-1]
        kinds: tuple[Category, ...] = ("item",) if f.topic == REFERENCE_TERM_ITEM else ("service", "item")
        if not any(catalogue.entry(kind, code) for kind in kinds):
            out.append(Finding("blocking", f.topic, f.uuid, f.name, f.count, f"{f.detail}: no such code in openIMIS"))
    return out


def insuree_findings(mapping: ClaimMapping, known: Mapping[str, Iterable[str]]) -> list[Finding]:
    """Entries of ``openimis.insuree_uuids`` (CHF id -> uuid, kept by hand) that openIMIS
    contradicts; ``known``: the uuids of openIMIS's current insurees with each CHF id.

    A claim's patient is that uuid: an insuree openIMIS does not know makes the claim be
    refused, a uuid of another insuree would bill the wrong person. Both block.
    """
    out: list[Finding] = []
    for chf_id, uuid in mapping.openimis.insuree_uuids.items():
        path = f"openimis.insuree_uuids.{chf_id}"
        found = sorted(known.get(chf_id, ()))
        if not found:
            out.append(
                _block(INSUREE, path, chf_id, "no such insuree in openIMIS: remove the entry or enrol the insuree")
            )
        elif uuid not in found:
            right = found[0] if len(found) == 1 else f"one of {', '.join(found)}"
            out.append(_block(INSUREE, path, chf_id, f"uuid is {uuid}: set it to {right}"))
    return out
