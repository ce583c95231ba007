"""A fixed sample of planted bugs, run in CI: each must turn its tests red.

The full mutation run (``tools/mutation.py``, docs/TESTING.md) takes too long for every CI
run on two cores; this sample keeps the bugs a mutation audit once found unpinned, and a few
from each core module, pinned from now on. Each case copies the package to a scratch folder,
plants one bug (a text replacement that must match exactly once, so a refactoring that
moves the line fails here loudly instead of quietly testing nothing), and runs the named
tests against the copy in a subprocess: they must fail, and without the bug they must pass
(the rest of the suite runs them on the real code).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "daemon" / "coactive_credd"

# (module, the line as it is, the line with the bug, the tests that must fail)
PLANTED = [
    (
        "server/refresh.py",
        "skew=cfg.daemon.skew, refresh_fraction=cfg.daemon.refresh_fraction",
        "",
        ["tests/test_refresh.py::test_skew_and_refresh_fraction_come_from_the_config"],
    ),
    (
        # every connection's peer is judged here, before either serving path sees a byte
        "server/fastpath.py",
        "        if not self.api.peer_allowed(uid):",
        "        if False:",
        ["tests/test_peer.py::test_the_in_process_daemon_refuses_another_uid_on_every_route"],
    ),
    (
        "server/api.py",
        'if uid != self.uid and request.path.startswith("/v1/admin/"):',
        'if uid != self.uid and request.path.startswith("/v1/admin/lock"):',
        ["tests/test_peer.py::test_the_in_process_daemon_refuses_another_uid_on_every_route"],
    ),
    (
        "server/refresh.py",
        'getattr(exc, "retry_after", None),',
        "None,",
        ["tests/test_refresh.py::test_retry_after_is_honoured"],
    ),
    (
        "server/fastpath.py",
        "            if close:  # nothing after",
        "            if False:  # nothing after",
        ["tests/test_fastpath.py::test_a_head_split_across_reads_and_connection_close"],
    ),
    (
        "server/fastpath.py",
        "            d.start_refresh(p)",
        "            pass",
        ["tests/test_refresh.py::test_a_caller_in_the_advisory_window_is_answered_at_once"],
    ),
    (
        "server/fastpath.py",
        "now = d.last_use = d.clock()",
        "now = d.clock()",
        ["tests/test_lock.py::test_auto_lock_after_idle_with_a_jumped_clock"],
    ),
    (
        "server/persist.py",
        "if sec is not None and fingerprint(sec.secret, sec.client_id) == fp:",
        "if sec is not None:",
        ["tests/test_persist.py::test_a_token_is_not_kept_under_credentials_that_did_not_mint_it"],
    ),
    (
        "server/reconcile.py",
        "if p.rt.token is not None and p.rt.token.expires_at >= cached.expires_at:",
        "if False:",
        ["tests/test_persist.py::test_reload_keeps_a_newer_token_than_the_vaults"],
    ),
    (
        "core/engine.py",
        "    return left > skew_for(token, policy) and left >= min_ttl",
        "    return left > skew_for(token, policy)",
        ["tests/test_engine.py"],
    ),
    (
        "core/request.py",
        "if len(head) > MAX_LINE or head.count(",
        "if len(head) > MAX_LINE + 1 or head.count(",
        ["tests/test_request_rules.py"],
    ),
    (
        "core/gitcred.py",
        "    if not 0 < port < 65536:",
        "    if not 0 <= port < 65536:",
        ["tests/test_gitcred.py"],
    ),
    (
        "core/gitcred.py",
        "        return username if username in names else None",
        "        return username if username in names else next(iter(names), None)",
        ["tests/test_gitcred.py"],
    ),
]


@pytest.mark.heavy
@pytest.mark.parametrize(
    ("module", "line", "bug", "tests"),
    PLANTED,
    ids=[f"{m}:{line.strip()[:40]}" for m, line, _, _ in PLANTED],
)
def test_a_planted_bug_turns_its_tests_red(
    module: str, line: str, bug: str, tests: list[str], tmp_path: Path
) -> None:
    if any("test_peer" in t for t in tests) and os.geteuid() != 0:
        pytest.skip("the peer tests need root to act as another uid (CI runs as root)")
    copy = tmp_path / "coactive_credd"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    source = (copy / module).read_text()
    assert source.count(line) == 1, f"{module} no longer has this line once: {line!r}"
    (copy / module).write_text(source.replace(line, bug))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp_path), str(ROOT / "client_shim" / "python"), env.get("PYTHONPATH", "")]
    )
    where = subprocess.run(
        [sys.executable, "-c", "import coactive_credd; print(coactive_credd.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip() == str(copy / "__init__.py")  # the copy is what runs
    # Only the plugins the named tests use: finding and loading every installed one
    # (hypothesis, benchmark, anyio's trio...) cost about 2.5 s of CPU per run.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    plugins = ["xdist.plugin", "xdist.looponfail", "pytest_asyncio.plugin", "pytest_timeout"]
    run = subprocess.run(
        # -n 0: in this process (the named tests are few; workers would only cost start-ups)
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-n", "0"]
        + [arg for plugin in plugins for arg in ("-p", plugin)]
        + tests,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # 1: tests failed (not 2-5: interrupted, internal error, usage error, no tests collected)
    assert run.returncode == 1, f"the bug survived ({run.returncode}):\n{run.stdout[-2000:]}"
    # and red because a test failed, not because one could not run (a set-up error, such as a
    # plugin missing from the list above, also exits 1)
    summary = run.stdout.strip().splitlines()[-1]
    assert " failed" in summary and " error" not in summary, run.stdout[-2000:]
