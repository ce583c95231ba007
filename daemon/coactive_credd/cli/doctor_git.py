"""doctor's check of git: for each Coactive origin in the config, whether git's credential
helper is set up for it and which profile it gets.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from coactive_credd.cli.common import resolve_paths
from coactive_credd.cli.doctor_net import NET_TIMEOUT, Finding


def _git_config(pattern: str) -> list[str]:
    return subprocess.run(
        ["git", "config", "--global", "--get-regexp", pattern],
        capture_output=True,
        text=True,
        timeout=NET_TIMEOUT,
        check=False,
    ).stdout.splitlines()


def check_git(found: list[Finding]) -> None:
    """For each Coactive origin: is git set up for it, and which profile it gets, as the
    helper picks it (git's username from setup-git, else $COACTIVE_PROFILE, else default)."""
    from coactive_credd.cli.git import origin_url
    from coactive_credd.core import config, gitcred

    if not shutil.which("git"):
        return
    try:
        helpers = _git_config(r"^credential\..*\.helper$")
        usernames = _git_config(r"^credential\..*\.username$")
        profiles = config.load(resolve_paths().config_file).profiles.values()
    except (OSError, subprocess.TimeoutExpired, config.ConfigError):
        return
    origins: dict[str, list[str]] = {}
    for p in profiles:
        origin = gitcred.base_url_origin(p.base_url)
        if origin is not None:
            origins.setdefault(origin_url(origin), []).append(p.name)
    for url, names in sorted(origins.items()):
        names.sort()
        key = f"credential.{url}"
        if not any(line == f"{key}.helper coactive" for line in helpers):
            found.append(
                Finding(
                    "git",
                    "note",
                    f"git is not set up for {url}",
                    f"coactive-credd setup-git --profile {names[0]}",
                )
            )
            continue
        pinned = [
            line.split(" ", 1)[1] for line in usernames if line.startswith(f"{key}.username ")
        ]
        username = pinned[-1] if pinned else None
        chosen = gitcred.choose(names, username, os.environ.get("COACTIVE_PROFILE"))
        why = (
            f"{key}.username = {username}"
            if username
            else "COACTIVE_PROFILE"
            if chosen and chosen == os.environ.get("COACTIVE_PROFILE")
            else "no username set"
        )
        if chosen is None:
            found.append(
                Finding(
                    "git",
                    "problem",
                    f"git asks coactive-credd for {url}, but no profile answers ({why}; "
                    f"profiles there: {', '.join(names)})",
                    f"coactive-credd setup-git --profile {names[0]}",
                )
            )
        else:
            found.append(Finding("git", "ok", f"git gets profile {chosen!r} for {url} ({why})"))
