"""Proxies: the daemon reaches Coactive through a real tinyproxy, over real TLS.

Loopback is where the fake Coactive lives, and many proxy conventions go direct to loopback
on their own; so every test that says "through the proxy" proves it from the proxy's own log
(a ``CONNECT 127.0.0.1:PORT`` line), and every "direct" test proves the log has none.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from coactive_credd.core import config
from coactive_credd.core import proxy_choice as proxy
from coactive_credd.testing.fakeupstream import FakeCoactive, FakeCoactiveThread

from .conftest import PERSONAL_TOKEN, run_cli, start_daemon

PROXY_VARS = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY",
              "no_proxy", "NO_PROXY")  # fmt: skip


# ---- the rules, pure ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "no_proxy", "direct"),
    [
        ("api.coactive.ai", "coactive.ai", True),
        ("api.coactive.ai", ".coactive.ai", True),
        ("coactive.ai", ".coactive.ai", True),  # curl: a leading dot is ignored
        ("notcoactive.ai", "coactive.ai", False),  # a suffix, but not at a label boundary
        ("api.coactive.ai", "*", True),
        ("api.coactive.ai", "example.com, *.x", False),
        ("10.1.2.3", "10.0.0.0/8", True),
        ("10.1.2.3", "10.1.2.3", True),
        ("11.1.2.3", "10.0.0.0/8", False),
        ("[::1]", "::1", True),
        ("API.Coactive.AI", "coactive.ai", True),
        ("api.coactive.ai", "", False),
    ],
)
def test_no_proxy_follows_curl(host: str, no_proxy: str, direct: bool) -> None:
    assert proxy.bypassed(host, no_proxy) is direct


def test_choose_precedence() -> None:
    url = "https://api.coactive.ai"
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "lower:2", "NO_PROXY": "example.com"}
    # Lower case wins; no scheme means http:// (as curl).
    assert proxy.choose(url, None, env) == proxy.Route("http://lower:2", "https_proxy")
    assert proxy.choose(url, None, {"ALL_PROXY": "http://all:3"}).url == "http://all:3"
    # NO_PROXY goes direct, and says so.
    direct = proxy.choose(url, None, {**env, "no_proxy": "coactive.ai"})
    assert direct.url is None and "no_proxy" in direct.describe()
    # The profile's key wins over the environment, both ways.
    assert proxy.choose(url, "http://cfg:4", {"no_proxy": "*"}).url == "http://cfg:4"
    assert proxy.choose(url, "direct", env).url is None
    # HTTP_PROXY (upper case) is never used for http://: a CGI request header can set it.
    assert proxy.choose("http://127.0.0.1:1", None, {"HTTP_PROXY": "http://x:1"}).url is None
    assert proxy.choose(url, None, {}).describe() == "direct (no proxy variable set)"


def test_proxy_passwords_are_never_shown() -> None:
    route = proxy.choose(
        "https://api.coactive.ai", None, {"HTTPS_PROXY": "http://u:hunter2@p:3128"}
    )
    assert route.url == "http://u:hunter2@p:3128"  # aiohttp needs it to authenticate
    assert "hunter2" not in route.describe() and "hunter2" not in str(route.shown())
    with pytest.raises(ValueError) as err:
        proxy.choose("https://api.coactive.ai", None, {"HTTPS_PROXY": "socks5://u:hunter2@p:1"})
    assert "hunter2" not in str(err.value) and "HTTPS_PROXY" in str(err.value)


def test_config_proxy_key_is_checked_and_kept() -> None:
    cfg = config.parse('[profiles.a]\nproxy = "proxy.corp:3128"\n[profiles.b]\nproxy = ""\n')
    assert cfg.profiles["a"].proxy == "http://proxy.corp:3128"
    assert cfg.profiles["b"].proxy == "direct"
    assert config.parse(config.render(cfg)) == cfg
    with pytest.raises(config.ConfigError, match=r"\[profiles.a\].*only http://"):
        config.parse('[profiles.a]\nproxy = "https://proxy.corp"\n')


# ---- a real tinyproxy and the fake Coactive over TLS --------------------------------------


@dataclass
class TinyProxy:
    url: str
    log: Path

    def connects(self, port: int) -> list[str]:
        """The proxy's log lines about a CONNECT to 127.0.0.1:port."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [ln for ln in text.splitlines() if "CONNECT" in ln and f"127.0.0.1:{port}" in ln]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tinyproxy_factory(tmp_path: Path) -> Iterator[object]:
    exe = shutil.which("tinyproxy")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(
                "tinyproxy is not installed: .ci/setup installs it (apt-get install tinyproxy)"
            )
        pytest.skip("tinyproxy is not installed (apt-get install tinyproxy)")
    procs: list[subprocess.Popen[bytes]] = []

    def start(*extra: str) -> TinyProxy:
        folder = tmp_path / f"tinyproxy{len(procs)}"
        folder.mkdir()
        folder.chmod(0o777)  # tinyproxy may drop to another user; it must write its log
        port = _free_port()
        conf = folder / "tinyproxy.conf"
        log = folder / "tinyproxy.log"
        lines = [f"Port {port}", "Listen 127.0.0.1", "Timeout 30", f'LogFile "{log}"',
                 "LogLevel Connect", "MaxClients 20", "Allow 127.0.0.1", *extra]  # fmt: skip
        conf.write_text("\n".join(lines) + "\n")
        proc = subprocess.Popen([exe, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"tinyproxy exited: {log.read_text(errors='replace')}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return TinyProxy(f"http://127.0.0.1:{port}", log)
            except OSError:
                time.sleep(0.05)
        raise AssertionError("tinyproxy did not start")

    yield start
    for p in procs:
        p.terminate()
        p.wait(10)


@pytest.fixture
def tls_fake(tls_files: tuple[Path, Path]) -> Iterator[FakeCoactive]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    with FakeCoactiveThread(expires_in=3600, ssl_context=context) as f:
        f.add_personal_token(PERSONAL_TOKEN)
        yield f


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


def _port(fake: FakeCoactive) -> int:
    return int(fake.base_url.rsplit(":", 1)[1])


def _login(
    fake: FakeCoactive, bundle: Path, *extra: str, env: dict[str, str] | None = None
) -> None:
    proc = run_cli("login", "--base-url", fake.base_url, "--ca-bundle", str(bundle),
                   "--personal-token-stdin", *extra, input=PERSONAL_TOKEN + "\n", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def _profile_status(d: object) -> dict[str, object]:
    status, body = d.get("/v1/status")  # type: ignore[attr-defined]
    assert status == 200
    return dict(body["profiles"][0])


def test_tokens_come_through_https_proxy_with_tls_verified(
    home: Path, no_proxy_env: None, tinyproxy_factory: object, tls_fake: FakeCoactive,
    tls_files: tuple[Path, Path],
) -> None:  # fmt: skip
    tp = tinyproxy_factory()  # type: ignore[operator]
    _login(tls_fake, tls_files[0], "--no-verify")
    d = start_daemon(home, env={"HTTPS_PROXY": tp.url})
    try:
        status, body = d.get("/v1/token")
        assert status == 200 and body["access_token"] in tls_fake.issued
        assert tp.connects(_port(tls_fake)), "the login did not go through the proxy"
        st = _profile_status(d)
        assert st["proxy"] == tp.url
        assert st["proxy_route"] == f"{tp.url} (from HTTPS_PROXY)"
        shown = run_cli("status", env={"COACTIVE_CREDD_SOCKET": str(d.socket)})
        assert f"default: via proxy {tp.url} (from HTTPS_PROXY)" in shown.stdout
    finally:
        d.stop()


def test_tls_is_checked_through_the_tunnel(
    home: Path, no_proxy_env: None, tinyproxy_factory: object, tls_fake: FakeCoactive,
    tls_files: tuple[Path, Path],
) -> None:  # fmt: skip
    """Without the CA bundle, the same proxy path fails on Coactive's certificate: the tunnel
    does not weaken verification."""
    tp = tinyproxy_factory()  # type: ignore[operator]
    proc = run_cli("login", "--base-url", tls_fake.base_url, "--personal-token-stdin",
                   input=PERSONAL_TOKEN + "\n", env={"https_proxy": tp.url})  # fmt: skip
    assert proc.returncode == 6, proc.stderr
    assert "certificate" in proc.stderr
    assert tp.connects(_port(tls_fake))


def test_no_proxy_goes_direct(
    home: Path, no_proxy_env: None, tinyproxy_factory: object, tls_fake: FakeCoactive,
    tls_files: tuple[Path, Path],
) -> None:  # fmt: skip
    tp = tinyproxy_factory()  # type: ignore[operator]
    _login(tls_fake, tls_files[0], "--no-verify")
    d = start_daemon(home, env={"HTTPS_PROXY": tp.url, "NO_PROXY": "example.com,127.0.0.0/8"})
    try:
        assert d.get("/v1/token")[0] == 200
        assert tls_fake.logins == 1
        assert not tp.connects(_port(tls_fake))
        st = _profile_status(d)
        assert st["proxy"] is None and "NO_PROXY" in str(st["proxy_route"])
    finally:
        d.stop()


def test_profile_proxy_wins_over_the_environment(
    home: Path, no_proxy_env: None, tinyproxy_factory: object, tls_fake: FakeCoactive,
    tls_files: tuple[Path, Path],
) -> None:  # fmt: skip
    tp = tinyproxy_factory()  # type: ignore[operator]
    # The environment names a proxy nobody listens on and bypasses everything: the key wins.
    env = {"HTTPS_PROXY": f"http://127.0.0.1:{_free_port()}", "NO_PROXY": "*"}
    _login(tls_fake, tls_files[0], "--proxy", tp.url, env=env)  # verified through the proxy
    assert f'proxy = "{tp.url}"' in (home / "config.toml").read_text()
    assert len(tp.connects(_port(tls_fake))) == 1
    d = start_daemon(home, env=env)
    try:
        assert d.post("/v1/token/refresh")[0] == 200
        assert len(tp.connects(_port(tls_fake))) == 2
        assert _profile_status(d)["proxy_route"] == f"{tp.url} (from config)"
    finally:
        d.stop()
    # Logging in again without --proxy keeps it.
    _login(tls_fake, tls_files[0], "--no-verify")
    assert f'proxy = "{tp.url}"' in (home / "config.toml").read_text()


def test_a_refusing_proxy_is_a_transient_error_and_the_token_stays_served(
    home: Path, no_proxy_env: None, tinyproxy_factory: object, tls_fake: FakeCoactive,
    tls_files: tuple[Path, Path],
) -> None:  # fmt: skip
    # A real proxy that refuses CONNECT to any port but 443: it answers 403.
    tp = tinyproxy_factory("ConnectPort 443")  # type: ignore[operator]
    _login(tls_fake, tls_files[0])  # direct: the vault holds a valid token
    d = start_daemon(home, env={"HTTPS_PROXY": tp.url})
    try:
        status, first = d.get("/v1/token")
        assert status == 200
        status, body = d.post("/v1/token/refresh")
        assert status == 503 and body["error"]["code"] == "upstream_unavailable"
        assert tp.connects(_port(tls_fake)), "the refresh did not try the proxy"
        st = _profile_status(d)
        assert st["state"] == "valid"
        error = str(st["last_error"])
        assert f"the proxy {tp.url} refused to connect to Coactive: HTTP 403" in error
        # The valid token is still served meanwhile.
        status, again = d.get("/v1/token")
        assert status == 200 and again["access_token"] == first["access_token"]
        assert "refused to connect to Coactive" in d.log_text()
    finally:
        d.stop()


def test_a_proxy_nobody_listens_on_is_named(
    home: Path, no_proxy_env: None, tls_fake: FakeCoactive, tls_files: tuple[Path, Path]
) -> None:
    dead = f"http://user:hunter2@127.0.0.1:{_free_port()}"
    proc = run_cli("login", "--base-url", tls_fake.base_url, "--ca-bundle", str(tls_files[0]),
                   "--personal-token-stdin", input=PERSONAL_TOKEN + "\n",
                   env={"HTTPS_PROXY": dead})  # fmt: skip
    assert proc.returncode == 6
    assert "cannot connect to the proxy http://***@127.0.0.1:" in proc.stderr
    assert "hunter2" not in proc.stderr


def test_proxy_credentials_authenticate_and_are_never_shown(
    home: Path, no_proxy_env: None, tinyproxy_factory: object, tls_fake: FakeCoactive,
    tls_files: tuple[Path, Path],
) -> None:  # fmt: skip
    tp = tinyproxy_factory("BasicAuth alice s3cret-proxy-pw")  # type: ignore[operator]
    host = tp.url.removeprefix("http://")
    wrong = run_cli("login", "--base-url", tls_fake.base_url, "--ca-bundle", str(tls_files[0]),
                    "--personal-token-stdin", input=PERSONAL_TOKEN + "\n",
                    env={"HTTPS_PROXY": f"http://alice:wrong-pw@{host}"})  # fmt: skip
    # tinyproxy answers 401 where RFC 9110 says 407; either way the user is told what to fix.
    assert wrong.returncode == 6 and "refused to connect to Coactive: HTTP 401" in wrong.stderr
    assert "check the user name and password in the proxy URL" in wrong.stderr
    assert "wrong-pw" not in wrong.stderr
    _login(tls_fake, tls_files[0], "--no-verify")
    d = start_daemon(home, env={"HTTPS_PROXY": f"http://alice:s3cret-proxy-pw@{host}"})
    try:
        assert d.get("/v1/token")[0] == 200
        assert tp.connects(_port(tls_fake))
        st = _profile_status(d)
        assert st["proxy"] == f"http://***@{host}"
        assert "s3cret-proxy-pw" not in str(st)
    finally:
        d.stop()
    assert "s3cret-proxy-pw" not in d.log_text()


def test_doctor_uses_the_daemons_proxy_rules_and_hides_the_password(
    home: Path, no_proxy_env: None, tinyproxy_factory: object, tls_fake: FakeCoactive,
    tls_files: tuple[Path, Path],
) -> None:  # fmt: skip
    import json

    tp = tinyproxy_factory()  # type: ignore[operator]
    host = tp.url.removeprefix("http://")
    _login(tls_fake, tls_files[0], "--no-verify", "--proxy", f"http://bob:pw-in-config@{host}")
    env = {"HTTPS_PROXY": f"http://127.0.0.1:{_free_port()}"}  # the profile's key wins
    out = run_cli("doctor", "--json", env=env)
    network = [f for f in json.loads(out.stdout)["findings"] if f["check"] == "network"]
    assert network == [{"check": "network", "status": "ok", "fix": "",
                        "message": f"profile default ({tls_fake.base_url}): through the proxy "
                                   f"http://***@{host} (from config)"}]  # fmt: skip
    dead = f"http://carol:pw-in-env@127.0.0.1:{_free_port()}"
    # A second profile without a proxy key follows the environment.
    _login(tls_fake, tls_files[0], "--no-verify", "--profile", "env")
    out = run_cli("doctor", env={"HTTPS_PROXY": dead})
    assert out.returncode == 1
    assert (f"profile env ({tls_fake.base_url}): the proxy http://***@127.0.0.1:"
            in out.stdout and "(from HTTPS_PROXY) cannot be reached" in out.stdout)  # fmt: skip
    assert "pw-in-env" not in out.stdout + out.stderr
    assert "pw-in-config" not in out.stdout + out.stderr
