"""The list as CSV, for a spreadsheet. Pure.

A cell that starts with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return) is a formula
to Excel and LibreOffice: a patient name or a detail text typed as ``=HYPERLINK(...)`` would
run when billing staff open the file. Such cells get a leading ``'`` (OWASP's advice), which
the spreadsheet shows as plain text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal

from cdc_claims.desk.model import UnitRow

HEADER: Sequence[str] = (
    "unit_kind",
    "unit_uuid",
    "state",
    "reason",
    "claim_code",
    "patient_identifier",
    "patient_name",
    "visit_type",
    "facility",
    "claimed",
    "approved",
    "withdrawal_needed",
    "attempts",
    "created_at_utc",
    "updated_at_utc",
    "detail",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> str:
    """One CSV cell: text, safe to open in a spreadsheet."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _row(row: UnitRow) -> list[str]:
    values: list[object] = [
        row.unit_kind,
        row.unit_uuid,
        row.state.value,
        row.reason,
        row.claim_code,
        row.patient_identifier,
        row.patient_name,
        row.visit_type,
        row.facility,
        row.claimed,
        row.approved,
        row.withdrawal,
        row.attempts,
        row.created_at,
        row.updated_at,
        row.detail,
    ]
    return [cell(v) for v in values]


def to_csv(rows: Iterable[UnitRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    for row in rows:
        writer.writerow(_row(row))
    return out.getvalue()
