"""How old a personal token is, and when Coactive will stop taking it.

Coactive's personal tokens expire 3 months after they were generated (and after 30 days
unused, which a running daemon never lets happen); system credentials do not expire. ``login``
records the day the token was stored (``credential_created`` in ``config.toml``; ``--created
YYYY-MM-DD`` when the token is older than that), and from :data:`WARN_DAYS` days before the
limit ``status``, ``doctor``, ``/metrics`` and a daily log line say so, with what to do.

Only the day is known, so the limit is taken at 00:00 UTC of the day 3 calendar months later
(a day clamped to the month's end, as ``2026-11-30`` + 3 months = ``2027-02-28``): early
rather than late. Pure functions of a ``now`` in epoch seconds, so tests jump a clock.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime
import functools
import logging
from collections.abc import Iterable
from typing import Any, Protocol

__all__ = [
    "LIMIT_MONTHS",
    "WARN_DAYS",
    "AgeWatch",
    "expires_at",
    "parse_created",
    "stamp",
    "status_fields",
    "warning",
]

log = logging.getLogger("coactive_credd")

LIMIT_MONTHS = 3
WARN_DAYS = 14
DAY = 86400
REGENERATE = (
    "generate a new personal token in the Coactive dashboard (Settings > API Tokens), then "
    "run `coactive-credd login --profile {name}`"
)


class _Profile(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def auth(self) -> str: ...
    @property
    def credential_created(self) -> datetime.date | None: ...


def add_months(day: datetime.date, months: int) -> datetime.date:
    """``day`` plus ``months`` calendar months, the day clamped to the month's length."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return day.replace(
        year=year, month=month, day=min(day.day, calendar.monthrange(year, month)[1])
    )


@functools.lru_cache(maxsize=64)  # the scheduler asks on every wake, for every profile
def expires_at(created: datetime.date) -> float:
    """Epoch seconds at which Coactive stops taking a personal token generated on ``created``."""
    end = add_months(created, LIMIT_MONTHS)
    return datetime.datetime(end.year, end.month, end.day, tzinfo=datetime.UTC).timestamp()


def _tracked(pc: _Profile) -> datetime.date | None:
    return pc.credential_created if pc.auth == "personal_token" else None


def days_left(pc: _Profile, now: float) -> float | None:
    """Days (fractional) until the personal token's limit; None for system credentials or
    a token whose day is not known."""
    created = _tracked(pc)
    return None if created is None else (expires_at(created) - now) / DAY


def warning(pc: _Profile, now: float) -> str | None:
    """One line when the personal token is within :data:`WARN_DAYS` days of its limit (or
    past it), naming the fix; None otherwise."""
    left = days_left(pc, now)
    if left is None or left > WARN_DAYS:
        return None
    created = _tracked(pc)
    assert created is not None
    end = add_months(created, LIMIT_MONTHS).isoformat()
    fix = REGENERATE.format(name=pc.name)
    if left <= 0:
        return f"profile {pc.name}: the personal token reached Coactive's 3-month limit on {end}; {fix}"
    whole = int(left)
    when = "less than a day" if whole == 0 else f"{whole} day{'s' if whole != 1 else ''}"
    return (
        f"profile {pc.name}: the personal token expires in {when} ({end}, 3 months after "
        f"{created.isoformat()}); {fix}"
    )


def status_fields(pc: _Profile, now: float) -> dict[str, Any]:
    """Fields of a profile's status: ``credential_created`` (YYYY-MM-DD), ``credential_expires_at``
    (RFC 3339 UTC), ``credential_days_left`` (whole days, floor), ``credential_warning`` —
    all null for system credentials or an unknown day."""
    created = _tracked(pc)
    if created is None:
        return {
            "credential_created": None,
            "credential_expires_at": None,
            "credential_days_left": None,
            "credential_warning": None,
        }
    end = add_months(created, LIMIT_MONTHS)
    left = (expires_at(created) - now) / DAY
    return {
        "credential_created": created.isoformat(),
        "credential_expires_at": f"{end.isoformat()}T00:00:00Z",
        "credential_days_left": int(left // 1),
        "credential_warning": warning(pc, now),
    }


def parse_created(text: str, now: float) -> datetime.date:
    """The ``--created`` day: ``YYYY-MM-DD``, not in the future. Raises ValueError with a
    one-line message."""
    try:
        day = datetime.date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--created {text!r}: give the day as YYYY-MM-DD") from None
    today = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
    if day > today:
        raise ValueError(
            f"--created {day.isoformat()} is in the future; give the day the token was generated"
        )
    return day


def stamp(
    pc: Any, old: Any, *, same_secret: bool, created: datetime.date | None, now: float
) -> Any:
    """``pc`` (a ProfileConfig) with ``credential_created`` set as ``login`` records it: the
    ``--created`` day if given; the day already recorded when the same personal token is stored
    again; else today. System credentials carry none."""
    if pc.auth != "personal_token":
        day = None
    elif created is not None:
        day = created
    elif same_secret and old is not None and old.credential_created is not None:
        day = old.credential_created
    else:
        day = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
    return dataclasses.replace(pc, credential_created=day)


class AgeWatch:
    """Logs each profile's :func:`warning` at most once per UTC day (the daemon's daily line)."""

    def __init__(self) -> None:
        self._said: dict[str, int] = {}

    def check(self, profiles: Iterable[_Profile], now: float) -> None:
        today = int(now // DAY)
        said: dict[str, int] = {}
        for pc in profiles:
            text = warning(pc, now)
            if text is None:
                continue
            if self._said.get(pc.name) != today:
                log.warning("%s", text)
            said[pc.name] = today
        self._said = said  # only profiles still warned about: bounded by the config
