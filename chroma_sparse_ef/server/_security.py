"""The server's API key and where it may listen without one.

The key is kept only as a SHA-256 digest: nothing in the process can print it back,
so no log line, repr or error body can leak it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging

from ._settings import API_KEY_ENV_VAR

__all__ = ["ApiKey", "is_loopback", "warn_if_exposed"]

logger = logging.getLogger("chroma_sparse_ef.server")


class ApiKey:
    """A configured API key, compared in constant time.

    Args:
        key: The key clients must send in `x-chroma-token`. Kept only as a digest.

    Raises:
        ValueError: If the key is empty.
    """

    __slots__ = ("_digest",)

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("the API key must not be empty")
        self._digest = hashlib.sha256(key.encode("utf-8")).digest()

    def __repr__(self) -> str:
        return "ApiKey('***')"

    def matches(self, candidate: str) -> bool:
        """Whether `candidate` (a header value) is the key.

        Both sides are hashed first, so the comparison takes the same time whatever the
        candidate's length or how many leading bytes it shares with the key.

        Args:
            candidate: The `x-chroma-token` value as Starlette decoded it (latin-1).

        Returns:
            True if it is the key.
        """
        # Starlette decodes header bytes as latin-1; re-encoding gives the raw bytes, which
        # match the key's UTF-8 encoding when the client sent it as UTF-8.
        raw = candidate.encode("latin-1", errors="replace")
        return hmac.compare_digest(hashlib.sha256(raw).digest(), self._digest)


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the server reachable from this machine only.

    Args:
        host: A host name or IP address, as given to ``--host``.

    Returns:
        True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1).
    """
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str, *, has_api_key: bool) -> bool:
    """Log a warning when the server would be reachable from the network without a key.

    Args:
        host: The address the server binds to.
        has_api_key: Whether an API key is configured.

    Returns:
        True if a warning was logged.
    """
    if has_api_key or is_loopback(host):
        return False
    logger.warning(
        "listening on %s, which is not a loopback address, with no API key: anyone who "
        "can reach this machine can use the server (set --api-key or %s)",
        host,
        API_KEY_ENV_VAR,
    )
    return True
