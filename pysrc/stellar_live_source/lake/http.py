"""A lake published over plain HTTP(S): read-only, and it cannot list.

Reads share RemoteStorage's path (one ranged GET through obstore's HTTP
store, the same error mapping: 404 is "not there yet", 401/403 access
denied, 5xx, resets, timeouts and short bodies StorageError, retried by the
lake). Existence is a HEAD request. With no listing, the lake finds its ends
by probing computed keys (lake/probe.py).

The configured extra headers (HTTP_HEADER_<NAME>) are sent with every
request as the client's default headers; their values never appear in the
description, logs or errors (nor does a password in the URL).
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import StorageConfigError, StorageError
from .remote import _SLACK, RemoteStorage, _first_line, _obstore_options
from .storage import _root


def _shown(url: str) -> str:
    """``url`` without a user or password, query or fragment: what may be logged."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


class HTTPStorage(RemoteStorage):
    """Objects at ``base_url`` + the lake's path + key, read by GET, found by HEAD."""

    kind = "HTTP"
    can_list = False
    _NO_BUCKET = ()  # a plain server has no buckets: every 404 is a missing object

    def __init__(
        self, base_url: str, prefix: str, headers: tuple[tuple[str, str], ...], timeout: float, max_inflight: int
    ) -> None:
        from obstore.store import HTTPStore

        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StorageConfigError(f"HTTP_BASE_URL must be an http:// or https:// URL, not {_shown(base_url)!r}")
        if parts.username is not None or parts.password is not None:
            # Clients name the URL in their errors; credentials go in a masked header instead.
            raise StorageConfigError(
                f"HTTP_BASE_URL={_shown(base_url)} carries a user or password: "
                "send credentials with HTTP_HEADER_AUTHORIZATION (masked) instead"
            )
        self._base = _shown(base_url)
        self._root = _root(prefix)
        super().__init__(f"{self._base}/{self._root}", timeout, max_inflight)
        options = _obstore_options(timeout, max_inflight, base_url)
        if headers:
            options["client_options"]["default_headers"] = dict(headers)
        try:
            self._store = HTTPStore(base_url.rstrip("/"), **options)
        except Exception as exc:  # obstore refuses a URL or header it cannot use
            self._pool.shutdown(wait=False)
            raise StorageConfigError(f"HTTP_BASE_URL={self._base}: {_first_line(str(exc))}") from None

    def descend(self, path: str) -> None:
        self._root = f"{self._root}{path}/"
        self.description = f"{self._base}/{self._root}"

    async def check(self) -> None:
        """The server must answer a HEAD for an object no lake holds with 404:
        a server that answers 200 (a page for every path), refuses HEAD, wants
        credentials or redirects where the client cannot follow is reported
        now as StorageConfigError naming HTTP_BASE_URL. An unreachable server
        or a 5xx is StorageError (retried)."""
        import obstore
        from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

        key = f".stellar-live-source-check-{secrets.token_hex(8)}"
        where = f"HTTP_BASE_URL={self._base} (the lake at {self.description})"
        try:
            async with asyncio.timeout(self.timeout + _SLACK):
                await obstore.head_async(self._store, self._root + key)
        except FileNotFoundError as exc:
            if _status(exc) in ("404", ""):
                return  # the answer a lake's server gives
            # obstore reads some refusals (405: no HEAD) as "not found": every probe would miss.
            raise StorageConfigError(
                f"{where}: answers a HEAD request with {_status(exc)}; an HTTP lake needs HEAD "
                "(404 for a missing object, 200 for one it holds)"
            ) from None
        except TimeoutError:
            raise StorageError(f"{self.description}: check: no answer within {self.timeout:.1f}s") from None
        except (PermissionDeniedError, UnauthenticatedError) as exc:
            raise StorageConfigError(
                f"{where}: access denied ({_status(exc)}): set the headers it needs with HTTP_HEADER_<NAME>"
            ) from None
        except Exception as exc:
            message = _first_line(str(exc))
            status = _status(exc)
            if "redirect" in message.lower():
                raise StorageConfigError(f"{where}: redirects the client cannot follow: {message}") from None
            if status.startswith("4") and status not in ("408", "429"):
                raise StorageConfigError(
                    f"{where}: answers a HEAD request with {status}; a lake's server answers 404 for a "
                    "missing object and 200 for one it holds"
                ) from None
            raise StorageError(f"{self.description}: check: {message}") from None
        raise StorageConfigError(
            f"{where}: answers 200 for {key!r}, an object no lake holds (a page for every path?): "
            "a lake's server must answer 404 for a missing object"
        )

    def _check(self) -> None:  # check() is async here
        raise NotImplementedError

    def _list(self, prefix: str, start_after: str | None, limit: int) -> list[str]:
        raise StorageError(f"{self.description}: an HTTP lake cannot be listed")


def _status(exc: Exception) -> str:
    """The HTTP status code obstore's message names ("" when none)."""
    message: Any = str(exc)
    marker = "status code: "
    at = message.find(marker)
    return message[at + len(marker) : at + len(marker) + 3] if at >= 0 else ""
