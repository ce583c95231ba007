"""``coactive-credd setup-git``: make git ask coactive-credd for a profile's origin, safely.

It writes, in the user's global git config, what ``gh auth setup-git`` writes for GitHub::

    git config --global --replace-all credential.https://api.coactive.ai.helper ''
    git config --global --add credential.https://api.coactive.ai.helper coactive

The empty value first clears every helper configured before it for that origin (a global
``credential.helper = store``, say; git-config(1), ``credential.<url>.*``), so no such helper
stores the short-lived token, and git asks the daemon each time. A helper configured after
it comes after ``coactive`` in git's list: never asked first, but it may keep a copy. Running it again gives the
same two entries. When the profile is not the one git-credential-coactive picks without a
username (another profile of the same origin is ``default``, say), it also sets
``credential.<origin>.username`` to the profile's name.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from typing import Any

from coactive_credd.cli.common import EXIT_FAILURE, EXIT_UNKNOWN_PROFILE, CommandError, profile_name

HELPER = "coactive"  # git runs git-credential-coactive


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    git = shutil.which("git")
    if git is None:
        raise CommandError("git is not installed; install git, then run this again", EXIT_FAILURE)
    return subprocess.run(
        [git, "config", "--global", *args], capture_output=True, text=True, timeout=30
    )


def _set(*args: str) -> None:
    r = _git(*args)
    if r.returncode != 0:
        detail = " ".join(r.stderr.split()) or f"git config exited {r.returncode}"
        raise CommandError(
            f"cannot write git's global config ({detail}); fix it, then run "
            "`coactive-credd setup-git` again",
            EXIT_FAILURE,
        )


def setup_git(profile: str) -> list[str]:
    """Configure git for ``profile``'s origin; returns the settings written, for the user.

    Raises :class:`CommandError` (exit 4) for an unknown profile or one whose base_url has
    no origin git could ask about, (exit 1) when git is missing or its config unwritable."""
    from coactive_credd.core import config, gitcred, paths

    cfg = config.load(paths.resolve().config_file)
    p = cfg.profiles.get(profile)
    if p is None:
        raise CommandError(
            f"no profile named {profile!r}; run `coactive-credd login --profile {profile}` first",
            EXIT_UNKNOWN_PROFILE,
        )
    origin = gitcred.base_url_origin(p.base_url)
    if origin is None:
        raise CommandError(
            f"profile {profile!r} has base_url {p.base_url!r}, which git cannot ask about; "
            f"run `coactive-credd login --profile {profile} --base-url https://HOST`",
            EXIT_UNKNOWN_PROFILE,
        )
    scheme, host, port = origin
    url = f"{scheme}://{host}" + ("" if port == gitcred.DEFAULT_PORTS[scheme] else f":{port}")
    key = f"credential.{url}"
    _set("--replace-all", f"{key}.helper", "")
    _set("--add", f"{key}.helper", HELPER)
    written = [
        f"{key}.helper = (empty: no helper before it stores the token)",
        f"{key}.helper = {HELPER}",
    ]
    same_origin = [
        n for n, q in cfg.profiles.items() if gitcred.base_url_origin(q.base_url) == origin
    ]
    if gitcred.choose(same_origin, None, None) != profile:
        _set("--replace-all", f"{key}.username", profile)
        written.append(f"{key}.username = {profile}")
    return written


def cmd_setup_git(args: argparse.Namespace) -> int:
    profile = profile_name(args)
    written = setup_git(profile)
    print(f"git now asks coactive-credd for profile {profile!r}; in your global git config:")
    for line in written:
        print(f"  {line}")
    if shutil.which("git-credential-" + HELPER) is None:
        print(
            "note: git-credential-coactive is not on PATH yet; copy it from client_shim/sh/ "
            "into a folder on PATH (see client_shim/README.md)"
        )
    return 0


def add_commands(add: Any) -> None:
    """Register setup-git on the main parser (``add`` is cli's helper)."""
    p = add(
        "setup-git",
        cmd_setup_git,
        "configure git to ask coactive-credd for the profile's base_url, and no other helper",
    )
    p.add_argument(
        "--profile", metavar="P", help="profile name (default: $COACTIVE_PROFILE or 'default')"
    )
