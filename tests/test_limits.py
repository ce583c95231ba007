"""The real daemon under resource limits, flooded (bench/limits.py, a shorter flood).

Under ``ulimit -n 64`` a thousand connections arrive at once: the callers connected before
keep every answer, the rest are refused (closed unanswered), the daemon lives, logs the
refusals in a line or two, and serves a new connection once the flood has gone. In a 64 MiB
memory cgroup, a thousand held connections and never-reading clients pipelining thousands of
requests neither get it OOM-killed nor stop it serving.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import limits


@pytest.mark.heavy
@pytest.mark.timeout(180)
def test_under_ulimit_n_64_a_flood_is_refused_and_the_connected_are_served() -> None:
    out = limits.scenario("nofile", 4.0)
    assert out["ok"], out
    assert out["connected_failures"] == 0 and out["connected_answers_ok"] > 50
    assert out["flood"]["cut_without_answer"] > 900  # refused, not queued for ever
    assert out["log_lines_during_flood"] <= 5  # the refusals are logged rate-limited


@pytest.mark.heavy
@pytest.mark.timeout(180)
def test_in_a_64_mib_memory_cgroup_a_flood_does_not_kill_it() -> None:
    why = limits.cgroup_writable()
    if why:  # CI runs as root on a machine with a writable cgroup-v1 memory hierarchy
        pytest.skip(why)
    out = limits.scenario("memory", 4.0)
    assert out["ok"], out
    assert out["cgroup_failcnt"] == 0
    assert out["flood"]["burst_requests_sent_unread"] > 1000
