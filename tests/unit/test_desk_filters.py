"""The list's filters: what the query string may ask for, and the SQL it turns into."""

from __future__ import annotations

from datetime import date, datetime

from cdc_claims.desk.filters import STATE_GROUPS, Filters, from_query, group_options, split_group
from cdc_claims.desk.queries import like_escape, units_count, units_page, units_where
from cdc_claims.lifecycle import State

FACILITY = "c58e12ed-3f12-11e4-adec-0800271c1b75"
VISIT_TYPE = "c22a5000-3f10-11e4-adec-0800271c1b75"


def test_a_full_query_string_is_read() -> None:
    f = from_query(
        {
            "state": "held:uninsured",
            "from": "2026-12-01",
            "to": "2026-12-31",
            "on": "created",
            "facility": FACILITY,
            "visit_type": VISIT_TYPE,
            "q": "  GAN 200000 ",
            "page": "3",
        }
    )
    assert f == Filters(
        group="held:uninsured",
        date_from=date(2026, 12, 1),
        date_to=date(2026, 12, 31),
        date_field="created",
        facility=FACILITY,
        visit_type=VISIT_TYPE,
        q="GAN 200000",
        page=3,
    )
    assert from_query(f.to_query()) == f


def test_malformed_values_are_dropped_not_passed_on() -> None:
    f = from_query(
        {
            "state": "held:no_such_reason",
            "from": "yesterday",
            "facility": "x' OR 1=1 --",
            "visit_type": "a" * 80,
            "page": "-4",
            "on": "deleted",
            "q": "x" * 500,
        }
    )
    assert f == Filters(q="x" * 64)
    assert from_query({"state": "nonsense"}).group == ""
    assert from_query({"page": "lots"}).page == 1
    assert from_query({"page": "99999999"}).page == 10_000


def test_reversed_dates_are_put_in_order() -> None:
    f = from_query({"from": "2026-12-31", "to": "2026-12-01"})
    assert (f.date_from, f.date_to) == (date(2026, 12, 1), date(2026, 12, 31))


def test_to_query_leaves_out_defaults_and_takes_overrides() -> None:
    assert Filters().to_query() == {}
    f = Filters(group="checked", q="RAHOS001", page=2)
    assert f.to_query() == {"state": "checked", "q": "RAHOS001", "page": "2"}
    assert f.to_query(page=1) == {"state": "checked", "q": "RAHOS001"}
    assert f.first_page().page == 1


def test_group_options_offer_every_group_and_held_reasons_in_words() -> None:
    options = dict(group_options())
    assert options[""] == "All claims"
    assert set(STATE_GROUPS) <= set(options)
    assert options["held:uninsured"] == "Held: no insurance number"
    assert all(split_group(value) is not None for value in options if value)


def test_no_filter_no_where() -> None:
    assert units_where(Filters()) == ("", [])


def test_state_group_and_reason() -> None:
    sql, args = units_where(Filters(group="needs_action"))
    assert sql == " WHERE l.state IN (%s, %s)"
    assert args == [State.HELD.value, State.FAILED.value]
    sql, args = units_where(Filters(group="held:unmapped_line"))
    assert sql == " WHERE l.state IN (%s) AND l.reason = %s"
    assert args == ["held", "unmapped_line"]


def test_withdrawal_group_asks_the_claim_history() -> None:
    sql, args = units_where(Filters(group="withdrawal"))
    assert "FROM cdc_claims_claim w" in sql
    assert "w.withdrawal IS NOT NULL" in sql
    assert args == []


def test_dates_are_an_inclusive_range_of_utc_days_on_the_chosen_column() -> None:
    sql, args = units_where(Filters(date_from=date(2026, 12, 1), date_to=date(2026, 12, 2)))
    assert sql == " WHERE l.updated_at >= %s AND l.updated_at < %s"
    assert args == [datetime(2026, 12, 1), datetime(2026, 12, 3)]
    sql, _ = units_where(Filters(date_to=date(2026, 12, 2), date_field="created"))
    assert sql == " WHERE l.created_at < %s"


def test_facility_matches_the_encounter_or_the_visit_location() -> None:
    sql, args = units_where(Filters(facility=FACILITY))
    assert "FROM encounter e" in sql and "FROM visit v" in sql
    assert args == [FACILITY, FACILITY]


def test_search_is_a_parameter_with_like_wildcards_escaped() -> None:
    sql, args = units_where(Filters(q="50%_off\\"))
    assert "50%" not in sql  # the typed text never reaches the statement
    assert args == ["%50\\%\\_off\\\\%", "50%_off\\", "%50\\%\\_off\\\\%", "50%_off\\"]
    assert "pi.identifier = %s" in sql
    assert like_escape("a_b%c") == "a\\_b\\%c"


def test_every_filter_together_keeps_args_in_placeholder_order() -> None:
    f = Filters(
        group="held:uninsured",
        date_from=date(2026, 1, 1),
        date_to=date(2026, 1, 31),
        facility=FACILITY,
        visit_type=VISIT_TYPE,
        q="GAN1",
    )
    sql, args = units_where(f)
    assert sql.count("%s") == len(args) == 11
    assert args[:4] == ["held", "uninsured", datetime(2026, 1, 1), datetime(2026, 2, 1)]
    assert args[4:7] == [FACILITY, FACILITY, VISIT_TYPE]


def test_page_and_count_statements() -> None:
    sql, args = units_page(Filters(group="checked", page=3), page_size=50)
    assert sql.startswith("SELECT l.unit_kind, l.unit_uuid, l.state")
    assert sql.endswith("ORDER BY l.updated_at DESC, l.ledger_id DESC LIMIT %s OFFSET %s")
    assert args == ["checked", 50, 100]
    sql, args = units_count(Filters(group="checked"))
    assert sql == "SELECT COUNT(*) AS n FROM cdc_claims_ledger l WHERE l.state IN (%s)"
    assert args == ["checked"]
