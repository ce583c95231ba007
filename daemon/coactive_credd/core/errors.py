"""The package's one exception root, and the exit codes the command line gives for it.

Every error a user can fix derives from :class:`CreddError`; its ``str()`` is one line
that says what is wrong and the command that fixes it (never a secret), and its
``exit_code`` is what ``coactive-credd`` exits with (the model is click's
``ClickException.exit_code``). Third-party errors (aiohttp, cryptography, OSError from a
file) are translated once, where they are met, with ``raise X(...) from exc``. Where callers
already catch a stdlib type, a class mixes it in (``BadQuery`` is also a ``ValueError``).

::

    CreddError (Exception)                         exit 1 unless a subclass says otherwise
    ├── UsageError                                 2  a flag, name or value the user gave
    │   └── request.BadQuery (+ValueError)         2  a query the socket protocol refuses
    ├── config.ConfigError                         1  config.toml is wrong (file, line, fix)
    ├── fsutil.InsecurePathError                   1  a path that should be private is not
    ├── tokenfile.TokenFileError                   1
    ├── credfile.CredentialFileError               1
    ├── vault.VaultError                           1  the vault (file named, fix given)
    │   ├── VaultCorrupt, VaultVersionError, VaultKeyMissing, VaultInsecure, WrongPassphrase
    │   └── VaultLocked                            7
    ├── upstream.UpstreamError                     1  a login exchange failed (.retryable)
    │   ├── CredentialsRejected                    5
    │   └── UpstreamUnavailable                    6
    ├── api.ApiError / admin.AdminError            .status, .code: the protocol's error body
    ├── server.StartupError, service.ActivationError, install.InstallError
    └── cli_common.CommandError                    the exit code it is given

The client shim ``coactive_token`` keeps a root of its own, ``CredddError`` (with
``DaemonUnreachable`` and ``DaemonNotAnswering``, exit 3): it is one dependency-free file that
programs copy, so it cannot import this package. The command line catches both roots, and
nothing else decides an exit code: never a class name, never a message's text.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # anything not listed below
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3  # no daemon, or not one to trust
EXIT_UNKNOWN_PROFILE = 4
EXIT_REJECTED = 5  # Coactive rejected the credentials: log in again
EXIT_UNAVAILABLE = 6  # Coactive unavailable and no valid token
EXIT_LOCKED = 7


class CreddError(Exception):
    """Root of every error a user can fix: ``str(exc)`` is one line with the fix, and
    ``exit_code`` (an ``int``, class default :data:`EXIT_FAILURE`) is the command's exit."""

    exit_code: int = EXIT_FAILURE


class UsageError(CreddError):
    """A flag, name or value given by the user is not valid (exit 2)."""

    exit_code = EXIT_USAGE
