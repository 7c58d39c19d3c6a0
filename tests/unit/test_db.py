"""The IN-list helper every adapter builds its ``IN (...)`` and ``VALUES (...)`` lists with."""

from __future__ import annotations

import pytest

from cdc_claims.db import placeholders


def test_placeholders_are_n_parameters() -> None:
    assert placeholders(1) == "%s"
    assert placeholders(3) == "%s, %s, %s"
    assert placeholders(40).count("%s") == 40


@pytest.mark.parametrize("n", [0, -1])
def test_an_empty_list_is_refused_rather_than_sent_as_in_parentheses(n: int) -> None:
    with pytest.raises(ValueError, match="at least one"):
        placeholders(n)
