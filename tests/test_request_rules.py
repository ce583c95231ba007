"""The socket protocol's query and header rules (request.py) as the contract states them, in
process: the differential tests compare the two paths with each other, these pin the values."""

from __future__ import annotations

import pytest
from coactive_credd import request


def test_min_ttl_bounds_and_the_error_it_gives() -> None:
    assert request.parse_min_ttl(None) == 0
    assert request.parse_min_ttl("0") == 0
    assert request.parse_min_ttl("86400") == 86400
    for bad in ("86401", "-1", "+1", " 1", "1.5", "", "\u0661", "x" * 40):
        with pytest.raises(request.BadQuery) as err:
            request.parse_min_ttl(bad)
        assert err.value.message == (
            "min_ttl must be a whole number of seconds from 0 to 86400, got "
            + repr(bad[:32].encode("ascii", "backslashreplace").decode())
        )
        assert err.value.hint == "pass ?min_ttl=SECONDS"
        assert str(err.value) == err.value.message
    with pytest.raises(request.BadQuery) as err:
        request.parse_min_ttl("\u0661")  # ARABIC-INDIC DIGIT ONE: shown escaped, in ASCII
    assert err.value.message.endswith("got '\\\\u0661'")


def test_the_first_value_of_each_parameter_blank_ones_kept() -> None:
    assert request.parse_query("") == {}
    assert request.parse_query("profile=&min_ttl=5&profile=b") == {"profile": "", "min_ttl": "5"}
    assert request.parse_query("profile=a+b%21") == {"profile": "a b!"}


@pytest.mark.parametrize(
    ("accept", "plain"),
    [
        ("text/plain", True),
        ("Text/Plain; q=1", True),
        ("application/json, TEXT/PLAIN", True),
        ("application/json", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_text_plain_is_asked_for_in_any_case(accept: str, plain: bool) -> None:
    assert request.wants_plain_text(accept) is plain
