"""The list's SQL, built from :class:`~cdc_claims.desk.filters.Filters`: pure, so it is tested
without a database.

Only constant text and runs of ``%s`` are ever formatted into a statement; every value a clerk
typed travels as a parameter. The ledger (``cdc_claims_ledger l``) is the list's base: one row
per encounter or visit. Facility, visit type and patient identifier are matched through
sub-selects on the OpenMRS tables (by uuid, so links stay valid), which keeps one row per unit
without a ``GROUP BY``.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

from cdc_claims.db import placeholders
from cdc_claims.desk.filters import Filters, split_group

LIST_COLUMNS = (
    "l.unit_kind, l.unit_uuid, l.state, l.reason, l.detail, l.claim_code, l.patient_uuid, l.visit_uuid,"
    " l.attempts, l.created_at, l.updated_at"
)
ORDER = " ORDER BY l.updated_at DESC, l.ledger_id DESC"

#: a claim of the unit still has lines (or the whole claim) to withdraw in openIMIS
_WITHDRAWAL = (
    "EXISTS (SELECT 1 FROM cdc_claims_claim w WHERE w.unit_kind = l.unit_kind AND w.unit_uuid = l.unit_uuid"
    " AND w.withdrawal IS NOT NULL AND w.withdrawal NOT IN ('', '{}'))"
)
_FACILITY = (
    "((l.unit_kind = 'encounter' AND l.unit_uuid IN (SELECT e.uuid FROM encounter e"
    " JOIN location fe ON fe.location_id = e.location_id WHERE fe.uuid = %s))"
    " OR l.visit_uuid IN (SELECT v.uuid FROM visit v JOIN location fv ON fv.location_id = v.location_id"
    " WHERE fv.uuid = %s))"
)
_VISIT_TYPE = (
    "l.visit_uuid IN (SELECT v.uuid FROM visit v JOIN visit_type vt ON vt.visit_type_id = v.visit_type_id"
    " WHERE vt.uuid = %s)"
)
_SEARCH = (
    "(l.claim_code LIKE %s OR l.unit_uuid = %s"
    " OR EXISTS (SELECT 1 FROM cdc_claims_claim s WHERE s.unit_kind = l.unit_kind AND s.unit_uuid = l.unit_uuid"
    " AND s.claim_code LIKE %s)"
    " OR l.patient_uuid IN (SELECT pp.uuid FROM person pp JOIN patient_identifier pi ON pi.patient_id = pp.person_id"
    " WHERE pi.voided = 0 AND pi.identifier = %s))"
)


def like_escape(text: str) -> str:
    """``text`` as a literal inside a ``LIKE`` pattern (``%``, ``_`` and ``\\`` lose their meaning)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def units_where(filters: Filters) -> tuple[str, list[Any]]:
    """``WHERE ...`` (or ``""``) on ``cdc_claims_ledger l`` and its parameters."""
    clauses: list[str] = []
    args: list[Any] = []
    found = split_group(filters.group) if filters.group else None
    if found is not None:
        group, reason = found
        if group.states:
            clauses.append(f"l.state IN ({placeholders(len(group.states))})")
            args += [s.value for s in group.states]
        else:
            clauses.append(_WITHDRAWAL)
        if reason is not None:
            clauses.append("l.reason = %s")
            args.append(reason)
    column = "l.created_at" if filters.date_field == "created" else "l.updated_at"
    if filters.date_from is not None:
        clauses.append(f"{column} >= %s")
        args.append(datetime.combine(filters.date_from, time.min))
    if filters.date_to is not None:
        clauses.append(f"{column} < %s")
        args.append(datetime.combine(filters.date_to + timedelta(days=1), time.min))
    if filters.facility:
        clauses.append(_FACILITY)
        args += [filters.facility, filters.facility]
    if filters.visit_type:
        clauses.append(_VISIT_TYPE)
        args.append(filters.visit_type)
    if filters.q:
        pattern = f"%{like_escape(filters.q)}%"
        clauses.append(_SEARCH)
        args += [pattern, filters.q, pattern, filters.q]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def units_page(filters: Filters, *, page_size: int) -> tuple[str, list[Any]]:
    """The SELECT of one page of the list, newest change first."""
    where, args = units_where(filters)
    offset = (max(filters.page, 1) - 1) * page_size
    sql = f"SELECT {LIST_COLUMNS} FROM cdc_claims_ledger l{where}{ORDER} LIMIT %s OFFSET %s"  # noqa: S608
    return sql, [*args, page_size, offset]


def units_count(filters: Filters) -> tuple[str, list[Any]]:
    where, args = units_where(filters)
    return f"SELECT COUNT(*) AS n FROM cdc_claims_ledger l{where}", args  # noqa: S608 - constants and %s only
