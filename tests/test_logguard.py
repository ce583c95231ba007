"""One rate-limited line per kind of event: accept() out of descriptors, loop errors, parser
errors. asyncio's own loop (what serve runs on without uvloop) reports every failed accept()
to the loop's exception handler with a traceback; about 4 MB of them in 3 s at the fd limit."""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest
from aiohttp.http_exceptions import BadHttpMessage
from coactive_credd.server import logguard


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_accept_failures_at_the_fd_limit_log_one_line_per_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    limiter = logguard.RateLimiter(window=10, clock=clock)
    loop = asyncio.new_event_loop()
    try:
        logguard.install_loop_handler(loop, limiter)
        caplog.set_level(logging.INFO)
        exc = OSError(errno.EMFILE, "Too many open files")
        for _ in range(5000):  # what asyncio's accept loop reports in a few seconds
            loop.call_exception_handler(
                {"message": "socket.accept() out of system resource", "exception": exc}
            )
        clock.now = 11
        loop.call_exception_handler(
            {"message": "socket.accept() out of system resource", "exception": exc}
        )
    finally:
        loop.close()
    lines = caplog.text.splitlines()
    assert len(lines) == 2 and "Traceback" not in caplog.text
    assert "Too many open files" in lines[0] and "LimitNOFILE" in lines[0]
    assert "4999 more like it" in lines[1]


def test_other_loop_errors_are_one_line_each_kind(caplog: pytest.LogCaptureFixture) -> None:
    limiter = logguard.RateLimiter(window=10, clock=Clock())
    loop = asyncio.new_event_loop()
    try:
        logguard.install_loop_handler(loop, limiter)
        for _ in range(100):
            try:
                raise AssertionError("a bug")
            except AssertionError as exc:
                loop.call_exception_handler({"message": "Task exception", "exception": exc})
            loop.call_exception_handler({"message": "Fatal read error", "exception": OSError(5)})
    finally:
        loop.close()
    assert caplog.text.count("Task exception") == 1 and caplog.text.count("Fatal read") == 1
    assert caplog.text.count("Traceback") == 1  # a bug's traceback once, an OS error's never


def test_a_parser_error_becomes_one_warning_without_the_requests_bytes() -> None:
    limiter = logguard.RateLimiter(window=10, clock=Clock())
    f = logguard.MalformedRequestFilter(limiter)
    exc = BadHttpMessage("Duplicate 'Host' header found", headers=None)
    kept = []
    for _ in range(50):
        record = logging.LogRecord(
            "aiohttp.server",
            logging.ERROR,
            __file__,
            1,
            "Error handling request from %s",
            ("",),
            (BadHttpMessage, exc, None),
        )
        if f.filter(record):
            kept.append(record)
    assert len(kept) == 1
    assert kept[0].levelno == logging.WARNING and kept[0].exc_info is None
    assert (
        kept[0].getMessage()
        == "refused a malformed request with 400: Duplicate 'Host' header found"
    )
