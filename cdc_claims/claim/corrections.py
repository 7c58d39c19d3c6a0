"""Changes after a claim was sent: what to add, what to withdraw, what to send again. Pure.

A clinician edits an encounter after its claim reached openIMIS. Re-sending the whole claim
bills every line twice (openIMIS accepts both claims and pays both), so the unit's *current*
billable content is compared with everything already claimed for it, line by line:

* a line's identity is its first order (a Bahmni quantity edit REVISEs the order: new uuid, same
  line), its obs, or its derived consultation id, together with its openIMIS code (a line mapped
  to another code is another line);
* **added or increased** lines (current quantity above what openIMIS accepted) go out in a
  **supplement** ``<code>-S<n>`` holding only the difference, related to the original
  (``Claim.related`` ``associated``), with the current diagnoses;
* **removed or reduced** lines are never sent again: the claims that hold them get a
  **withdrawal** entry per line (quantity and why), visible until openIMIS rejects the line or
  billing staff mark it handled;
* lines **openIMIS rejected** do not count as claimed: they go out again, in a **replacement**
  ``<code>-R<n>`` related to the rejected claim (``prior``), only when their content changed
  since the rejection (a fix in Bahmni or in the mapping), or when staff say the cause was fixed
  elsewhere (``force``: a policy renewed in openIMIS); never with accepted lines;
* a change of **diagnoses only** sends nothing (openIMIS has no diagnosis amendment): it is
  reported, and the next supplement carries the current diagnoses (``docs/corrections.md``).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from typing import Literal

from cdc_claims.assemble.model import ClaimDraft, ClaimLine

ClaimKind = Literal["original", "supplement", "replacement"]
LineKey = tuple[str, str]  # (line identity, openIMIS code)
MAX_CODE = 50


@dataclass(frozen=True)
class SentClaim:
    """A claim openIMIS holds for the unit, as sent, with the lines openIMIS rejected."""

    code: str
    kind: ClaimKind
    seq: int
    draft: ClaimDraft
    rejected: frozenset[str] = frozenset()  # source uuids of the lines openIMIS rejected
    whole_claim_rejected: bool = False


@dataclass(frozen=True)
class Withdrawal:
    """One line of one claim that must be withdrawn in openIMIS."""

    claim_code: str
    source_uuid: str
    code: str
    quantity: Decimal  # how much of the claimed quantity is no longer provided
    why: Literal["removed", "reduced", "voided"]


@dataclass(frozen=True)
class Diff:
    supplement: tuple[ClaimLine, ...] = ()  # lines (or quantity differences) never claimed
    replacement: dict[str, tuple[ClaimLine, ...]] = field(default_factory=dict)  # rejected code -> lines
    withdrawals: tuple[Withdrawal, ...] = ()
    still_rejected: tuple[ClaimLine, ...] = ()  # rejected lines unchanged since: not re-sent
    diagnoses_changed: bool = False

    @property
    def empty(self) -> bool:
        return not (self.supplement or self.replacement or self.withdrawals or self.diagnoses_changed)


def _key(line: ClaimLine) -> LineKey:
    return (line.identity, line.code)


def diff(current: ClaimDraft, sent: Sequence[SentClaim], *, force: bool = False) -> Diff:
    """Compare ``current`` with every claim in ``sent`` (see the module docstring)."""
    accepted: dict[LineKey, list[tuple[SentClaim, ClaimLine]]] = defaultdict(list)
    rejected: dict[str, list[tuple[SentClaim, ClaimLine]]] = defaultdict(list)  # by identity: a fix may change the code
    for claim in sorted(sent, key=lambda c: (c.kind != "original", c.seq)):
        for line in claim.draft.lines:
            if claim.whole_claim_rejected or line.source_uuid in claim.rejected:
                rejected[line.identity].append((claim, line))
            else:
                accepted[_key(line)].append((claim, line))

    now: dict[LineKey, ClaimLine] = {}
    for line in current.lines:
        key = _key(line)
        now[key] = replace(line, quantity=now[key].quantity + line.quantity) if key in now else line

    supplement: list[ClaimLine] = []
    replacement: dict[str, list[ClaimLine]] = defaultdict(list)
    still: list[ClaimLine] = []
    withdrawals: list[Withdrawal] = []
    for key, line in now.items():
        have = sum((ln.quantity for _c, ln in accepted.get(key, ())), Decimal(0))
        if line.quantity > have:
            extra = replace(line, quantity=line.quantity - have)
            refused = rejected.get(line.identity, [])
            if not refused:
                supplement.append(extra)
            elif force or not any(_same_content(ln, extra) for _c, ln in refused):
                replacement[refused[-1][0].code].append(extra)
            else:
                still.append(extra)
        elif line.quantity < have:
            withdrawals += _withdraw(accepted[key], have - line.quantity, "reduced")
    for key, claimed in accepted.items():
        if key not in now:
            withdrawals += _withdraw(claimed, sum((ln.quantity for _c, ln in claimed), Decimal(0)), "removed")

    original = next((c for c in sent if c.kind == "original"), None)
    diagnoses_changed = original is not None and _dx(original.draft) != _dx(current)
    return Diff(
        supplement=tuple(supplement),
        replacement={code: tuple(lines) for code, lines in replacement.items()},
        withdrawals=tuple(withdrawals),
        still_rejected=tuple(still),
        diagnoses_changed=diagnoses_changed,
    )


def _withdraw(
    claimed: Iterable[tuple[SentClaim, ClaimLine]], amount: Decimal, why: Literal["removed", "reduced"]
) -> list[Withdrawal]:
    """Take ``amount`` back from the most recent claims first (a supplement before the original)."""
    out: list[Withdrawal] = []
    left = amount
    for claim, line in sorted(claimed, key=lambda cl: (cl[0].kind != "original", cl[0].seq), reverse=True):
        if left <= 0:
            break
        take = min(left, line.quantity)
        reason: Literal["removed", "reduced"] = "removed" if why == "removed" or take == line.quantity else "reduced"
        out.append(Withdrawal(claim.code, line.source_uuid, line.code, take, reason))
        left -= take
    return out


def _same_content(a: ClaimLine, b: ClaimLine) -> bool:
    """Nothing a fix would change: openIMIS would refuse it again."""
    return (a.code, a.unit_price, a.quantity, a.category) == (b.code, b.unit_price, b.quantity, b.category)


def _dx(draft: ClaimDraft) -> tuple[tuple[str, bool], ...]:
    return tuple(sorted((d.icd10, d.primary) for d in draft.diagnoses))


def suffixed(code: str, suffix: str) -> str:
    """``code`` + ``suffix`` in at most 50 characters (the code is cut from the right if needed)."""
    return code[: MAX_CODE - len(suffix)] + suffix


def follow_up(
    current: ClaimDraft,
    lines: Sequence[ClaimLine],
    *,
    kind: Literal["supplement", "replacement"],
    original_code: str,
    related_code: str,
    seq: int,
    created: date,
) -> ClaimDraft:
    """A supplement (``<original>-S<n>``) or replacement (``<original>-R<n>``) holding only ``lines``,
    related to ``related_code`` (the original for a supplement, the rejected claim for a
    replacement). It carries no documents: they went with the original, where openIMIS's
    reviewer finds them, and sending them again would store them twice."""
    suffix = f"-S{seq}" if kind == "supplement" else f"-R{seq}"
    numbered = tuple(replace(line, sequence=i) for i, line in enumerate(lines, start=1))
    what = "lines added after submission" if kind == "supplement" else "lines openIMIS rejected, corrected"
    draft = replace(
        current,
        code=suffixed(original_code, suffix),
        lines=numbered,
        created=created,
        related_code=related_code,
        relationship="associated" if kind == "supplement" else "prior",
        explanation=f"{kind.capitalize()} to claim {related_code}: {what}",
        attachments=(),
    )
    return replace(draft, content_hash=draft_hash(draft))


def draft_hash(draft: ClaimDraft) -> str:
    """Content hash of a follow-up claim (its lines, diagnoses and relation)."""
    body = {
        "code": draft.code,
        "related": draft.related_code,
        "diagnoses": [[d.icd10, d.primary] for d in draft.diagnoses],
        "lines": [[ln.identity, ln.code, str(ln.quantity), str(ln.unit_price)] for ln in draft.lines],
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def withdrawal_map(withdrawals: Iterable[Withdrawal]) -> Mapping[str, dict[str, dict[str, str]]]:
    """claim code -> {source uuid: {"code", "quantity", "why"}}: what each claim must withdraw."""
    out: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for w in withdrawals:
        out[w.claim_code][w.source_uuid] = {"code": w.code, "quantity": str(w.quantity), "why": w.why}
    return out


def describe(withdrawals: Iterable[Withdrawal]) -> str:
    """Billing-staff text naming each line: ``0171 x10 (removed) in claim C``; uuids only."""
    return "; ".join(
        f"{w.code} x{w.quantity.normalize():f} ({w.why}) in claim {w.claim_code}, line {w.source_uuid}"
        for w in withdrawals
    )
