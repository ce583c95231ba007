"""The soak, CI-sized: the real daemon under faults, every answer checked against the ledger.

bench/soak.py runs for ten minutes or more; here its short schedule runs once (~70 s): 12
profiles on 16-second tokens, every shim kind and the C load generator calling, Coactive
answering 429, 503, resets, 401 for one profile, an outage longer than a token's life,
login/logout churn, SIGHUP, the wall clock stepped an hour forward and back, SIGSTOP longer
than a token's usable window, slowloris and never-reading clients. Then a planted fault (a scratch copy of the daemon that serves tokens
4 s past their deadline) must turn the same verdict red, so a soak that finds nothing is
known to be able to find something. The rules themselves are checked on hand-made records.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import coactive_credd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import soak
import soak_check
from soak_check import Answer, Window

# The wall clock is stepped an hour forward and back (coactive_credd.testing.hooks): before the
# daemon judged validity on the boot clock too, a step back served dead tokens for an hour.
CI_CLOCK_STEPS = True


@pytest.mark.heavy
@pytest.mark.xdist_group("timing")  # one at a time: each measures guarantees under its own load
@pytest.mark.timeout(400)
def test_short_soak_holds_every_guarantee() -> None:
    plan = soak.Plan(
        duration=300,  # a bound; one pass of the schedule, each phase whole
        profiles=12,
        lifetime=16,
        schedule=soak.SHORT,
        clock_steps=CI_CLOCK_STEPS,
        max_cycles=1,
    )
    figures = soak.run(plan, verbose=False)
    verdict = figures["verdict"]
    assert figures["ok"], figures
    assert figures["caller_kinds_missing"] == []
    for kind in ("raw", "sh", "python", "node", "go", "git"):
        assert figures["callers"][kind]["tokens"] > 0, kind
    assert figures["loadgen"]["requests"] > 0
    assert figures["rotations"] > 2 * plan.profiles
    assert figures["longest_outage_s"] > plan.lifetime
    assert verdict["tokens_served"] > 1000
    # The faults happened, and the failures they caused were looked at, not skipped.
    assert figures["politeness"]["retry_after_windows"] > 0
    assert figures["politeness"]["rejections"] == 1
    assert verdict["failures_total"] > 0


def _planted_copy(tmp: Path) -> Path:
    """A scratch copy of the package whose tokens stay servable 4 s past their deadline."""
    src = Path(coactive_credd.__file__).resolve().parent
    dst = tmp / "planted"
    shutil.copytree(src, dst / "coactive_credd", ignore=shutil.ignore_patterns("__pycache__"))
    engine = dst / "coactive_credd" / "core" / "engine.py"
    engine.write_text(
        engine.read_text()
        + "\n\n_real_skew_for = skew_for\n\n\n"
        + "def skew_for(*args, **kwargs):  # PLANTED: tokens served 4 s past their deadline\n"
        + "    return _real_skew_for(*args, **kwargs) - 4.0\n"
    )
    return dst


# Not in the "timing" group: it makes no load of its own (no shims, no load generator) that
# could make another's callers miss their answers, and more load around it can only add to
# the late tokens it must find. Beside the group, it shortens the group's chain by ~30 s.
@pytest.mark.heavy
@pytest.mark.timeout(300)
def test_the_soak_catches_a_token_served_past_its_deadline(tmp_path: Path) -> None:
    plan = soak.Plan(
        duration=120,
        profiles=5,
        lifetime=12,
        schedule=[(3, "ok"), (12, "outage"), (3, "ok")],  # the outage outlives every token
        max_cycles=1,
        shims=False,
        loadgen=False,
        daemon_path=_planted_copy(tmp_path),
    )
    figures = soak.run(plan, verbose=False)
    assert not figures["ok"]
    late = figures["verdict"]["served_past_deadline"]
    assert late["count"] > 0, figures
    assert "after the token's deadline" in late["first"][0]


# ---- the rules on hand-made records ------------------------------------------------------


def _issued(token: str, cred: str, at: float, life: int = 20) -> SimpleNamespace:
    return SimpleNamespace(access_token=token, credential=cred, issued_at=at, expires_in=life)


def _check(answers: list[Answer], windows: list[Window] | None = None) -> soak_check.Verdict:
    v = soak_check.Verdict()
    ledger = [_issued("t1", "c1", 100.0), _issued("t2", "c2", 100.0)]
    soak_check.check_answers(answers, ledger, {"a": {"c1"}, "b": {"c2"}}, windows or [], v)
    return v


def test_rules_a_token_asked_for_after_its_deadline_is_a_breach() -> None:
    assert _check([Answer("raw", "a", 109.9, 110.5, "t1")]).ok  # deadline 110 (skew 10)
    v = _check([Answer("raw", "a", 110.0, 110.1, "t1")])
    assert len(v.served_past_deadline) == 1


def test_rules_unknown_and_foreign_tokens_are_breaches() -> None:
    assert len(_check([Answer("raw", "a", 101, 102, "nope")]).unknown_tokens) == 1
    assert len(_check([Answer("raw", "a", 101, 102, "t2")]).unknown_tokens) == 1


def test_rules_a_failure_is_a_breach_only_while_a_servable_token_existed() -> None:
    assert len(_check([Answer("raw", "a", 103, 104, None, "503")]).failed_while_servable) == 1
    assert _check([Answer("raw", "a", 100.5, 101, None, "503")]).ok  # just issued: in flight
    assert _check([Answer("raw", "a", 109.5, 109.6, None, "503")]).ok  # about to die
    excused = [Window(102, 105, "a", "logged out")]
    assert _check([Answer("raw", "a", 103, 104, None, "404")], excused).ok


def _req(at: float, status: int | None, retry_after: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        path="/api/v0/login",
        credential="c1",
        at=at,
        status=status,
        retry_after=retry_after,
        fault=None,
    )


def test_rules_politeness() -> None:
    v = soak_check.Verdict()
    soak_check.check_politeness([_req(0, 429, "3"), _req(3.0, 200)], [], {}, v)
    assert v.ok
    soak_check.check_politeness([_req(0, 429, "3"), _req(1.0, 200)], [], {}, v)
    assert len(v.impolite) == 1
    v = soak_check.Verdict()
    soak_check.check_politeness([_req(0, 401), _req(5, 401)], [], {}, v)
    assert len(v.impolite) == 1  # asked again after a rejection, with no new credentials
    v = soak_check.Verdict()
    soak_check.check_politeness([_req(0, None), _req(45, None)], [], {}, v)
    assert len(v.impolite) == 1  # 45 s between tries with no usable token
    v = soak_check.Verdict()
    soak_check.check_politeness([_req(0, 200), _req(7.5, 200), _req(7.9, 200)], [], {}, v)
    assert len(v.impolite) == 1  # two logins for one refresh
    v = soak_check.Verdict()
    soak_check.check_politeness([_req(0, 200), _req(7.5, 200), _req(7.9, 200)], [], {}, v, [7])
    assert v.ok  # the wall clock was stepped forward while the first was in flight


def test_rules_growth() -> None:
    v = soak_check.Verdict()
    soak_check.check_flat([(0, 50_000, 20), (1, 70_000, 20), (2, 51_000, 22)], v)
    assert v.ok
    soak_check.check_flat([(0, 50_000, 20), (2, 90_000, 60)], v)
    assert len(v.growth) == 2
