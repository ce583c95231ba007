"""config.toml from a mounted ConfigMap folder (not a ``subPath``, which never sees an
update, kubernetes#50345): the daemon reads it through the kubelet's root-owned symlinks,
each hop checked, and reads it again when the kubelet swaps ``..data``."""

from __future__ import annotations

from pathlib import Path

from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import PERSONAL_TOKEN, start_daemon
from .test_credfile import Secret, wait_for


def test_a_configmap_folders_data_swap_is_picked_up(home: Path, fake: FakeCoactive) -> None:
    secret = Secret(home / "secret")
    secret.put(PERSONAL_TOKEN)
    configmap = Secret(home / "configmap", key="config.toml")  # the same AtomicWriter layout
    profile = (
        f'[profiles.{{name}}]\nbase_url = "{fake.base_url}"\ncredential_file = "{secret.path}"\n'
    )
    configmap.put(profile.format(name="default"))
    (home / "config.toml").symlink_to(configmap.path)  # as the image links it to the mount
    d = start_daemon(home)
    try:
        assert [p["name"] for p in d.get("/v1/status")[1]["profiles"]] == ["default"]
        assert d.get("/v1/token")[0] == 200
        configmap.put(profile.format(name="default") + "\n" + profile.format(name="second"))
        wait_for(lambda: len(d.get("/v1/status")[1]["profiles"]) == 2, what="the swapped ConfigMap")
        assert "(a ConfigMap update); reading it again" in d.log_text()
        assert d.get("/v1/token?profile=second")[0] == 200
    finally:
        d.stop()
