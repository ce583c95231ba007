"""What a failed login exchange is: one root and two kinds, and callers decide on the kind
alone::

    UpstreamError                  .detail (safe to log, never a secret), .retryable
     +-- CredentialsRejected       400/401/403 from login: the stored credentials are no good;
     |                             retrying will not help (retryable False), re-login needed.
     +-- UpstreamUnavailable       network error, timeout, TLS failure, 408/429/5xx, any other
                                   status, malformed answer: try again later (retryable True),
                                   honouring .retry_after when Coactive sent one.
"""

from __future__ import annotations

from coactive_credd.core.errors import EXIT_REJECTED, EXIT_UNAVAILABLE, CreddError

__all__ = ["MAX_MESSAGE_CHARS", "CredentialsRejected", "UpstreamError", "UpstreamUnavailable"]

# The most of another party's text (Coactive's message, a proxy's, an OS error) a detail quotes.
MAX_MESSAGE_CHARS = 200


class UpstreamError(CreddError):
    """A login exchange failed. ``detail`` is safe to log and never holds a secret."""

    retryable: bool = True

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class CredentialsRejected(UpstreamError):
    """Coactive answered 400/401/403: the credentials must be replaced; do not retry."""

    retryable = False
    exit_code = EXIT_REJECTED

    def __init__(self, detail: str, *, status: int) -> None:
        super().__init__(detail)
        self.status = status


class UpstreamUnavailable(UpstreamError):
    """Coactive could not be reached or gave no usable answer; try again later."""

    retryable = True
    exit_code = EXIT_UNAVAILABLE

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.retry_after = retry_after
        self.kind = kind  # "config": the daemon's own settings are wrong (a ca_bundle, a proxy)
