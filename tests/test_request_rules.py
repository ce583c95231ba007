"""The socket protocol's query and header rules (request.py) as the contract states them, in
process: the differential tests compare the two paths with each other, these pin the values."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import parse_qsl

import pytest
from coactive_credd.core import request
from hypothesis import given, settings
from hypothesis import strategies as st


def test_min_ttl_bounds_and_the_error_it_gives() -> None:
    assert request.parse_min_ttl(None) == 0
    assert request.parse_min_ttl("0") == 0
    assert request.parse_min_ttl("86400") == 86400
    shown = {  # what the caller sent -> how the error quotes it
        "86401": "'86401'",
        "-1": "'-1'",
        "+1": "'+1'",
        " 1": "' 1'",
        "1.5": "'1.5'",
        "": "''",
        "\u0661": "'\\u0661'",  # ARABIC-INDIC DIGIT ONE: escaped once, in ASCII
        "x" * 40: "'" + "x" * 32 + "'",  # the first 32 characters
    }
    for bad, quoted in shown.items():
        with pytest.raises(request.BadQuery) as err:
            request.parse_min_ttl(bad)
        assert err.value.message == (
            "min_ttl must be a whole number of seconds from 0 to 86400, got " + quoted
        )
        assert err.value.hint == "pass ?min_ttl=SECONDS"
        assert str(err.value) == err.value.message


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


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab=&;%+2F\u00e9 ", max_size=24))
def test_the_quick_reading_of_a_query_is_parse_qsl_s(raw: str) -> None:
    """Queries with nothing to decode skip parse_qsl; the pairs must be the same either way."""
    expected: dict[str, str] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        expected.setdefault(key, value)
    assert request.parse_query(raw) == expected


def test_the_head_shape_fails_in_linear_time() -> None:
    """A long run of target or field-value characters ending in a byte the shape refuses:
    with a plain (a+)* the parser would try every split of the run (minutes at 40 bytes)."""
    heads = [
        b"GET /" + b"a" * 40 + b"\x01 HTTP/1.1\r\nHost: x",
        b"GET /" + b"a" * 4000 + b"\x01 HTTP/1.1",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"x-a: " + b"a" * 3900 + b"\x7f",
    ]
    code = (
        "import sys\nfrom coactive_credd import request\n"
        f"for h in {heads!r}:\n    assert request.parse_head(h) is None\n"
    )
    # Bounded by a subprocess timeout, not a stopwatch: the linear parser takes microseconds.
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("head", "meaning"),
    [
        (b"GET /v1/token HTTP/1.1\r\nHost: x", (b"/v1/token", False)),
        (
            b"GET /v1/token?a=%2F HTTP/1.1\r\nhOsT:x\r\nCONNECTION:  Close ",
            (b"/v1/token?a=%2F", True),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: keep-alive",
            (b"/", False),
        ),
        (b"GET / HTTP/1.1\r\nX-Host: a\r\nHost: x\r\nAccept: application/json", (b"/", False)),
        (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y", None),  # a field that matters, twice
        (b"GET / HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\nContent-Length: 0", None),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1", None),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade", None),
        (b"GET / HTTP/1.1\r\nHost: x\r\nAccept: Text/Plain", None),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked", None),
        (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue", None),
        (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c", None),
        (b"GET / HTTP/1.1\r\nX-Host: x", None),  # no Host
        (b"GET / HTTP/1.1\r\nHost : x", None),  # space before the colon
        (b"GET / HTTP/1.1\r\nHost: x\r\n folded", None),  # obs-fold
        (b"GET / HTTP/1.1\r\nHost: x\nX: y", None),  # bare LF
        (b"GET / HTTP/1.1\r\nHost: x\rX: y", None),  # bare CR
        (b"GET / HTTP/1.1\r\nHost: x\x00", None),
        (b"GET /%zz HTTP/1.1\r\nHost: x", None),  # a malformed escape
        (b"GET /a#b HTTP/1.1\r\nHost: x", None),  # a fragment
        (b"GET http://x/ HTTP/1.1\r\nHost: x", None),  # absolute-form
        (b"GET / HTTP/1.0\r\nHost: x", None),
        (b"HEAD / HTTP/1.1\r\nHost: x", None),
        (b"GET / HTTP/1.1\r\nHost: x" + b"\r\nX: y" * 31, (b"/", False)),  # 32 field lines
        (b"GET / HTTP/1.1\r\nHost: x" + b"\r\nX: y" * 32, None),  # 33 field lines
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 4068, (b"/", False)),  # 4096 bytes
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 4069, None),  # one over MAX_LINE
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: XcloseX", None),  # only SP, HTAB trimmed
    ],
    ids=lambda v: repr(v[:60]) if isinstance(v, bytes) else ("answered" if v else "handed over"),
)
def test_what_the_fast_path_reads_in_a_head(
    head: bytes, meaning: tuple[bytes, bool] | None
) -> None:
    assert request.parse_head(head) == meaning
