"""API keys from ``API_KEYS_FILE``, watched for changes.

The file holds one key a line, ``name:key`` or a bare key (named ``key-`` and
a short fingerprint, never the key itself), ``#`` comments and blank lines: a
mounted Kubernetes Secret works unchanged. Only SHA-256 digests of the keys
are kept, and a presented key is compared with every one of them with
``hmac.compare_digest``, without stopping at a match, so the time a check
takes says nothing about which key, or how much of one, was right.

A watcher polls the file with ``os.stat`` (following symlinks, so the atomic
``..data`` swap of a Secret is seen) and re-reads it when it changes; a new
file that cannot be read or does not parse keeps the old keys, logged once.
No key ever reaches a log line, a metric or an exception message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
from typing import Any

from ..errors import ConfigError

log = logging.getLogger("stellar_live_source.server")

#: How often the watcher looks at the file, seconds.
WATCH_INTERVAL = 1.0


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def fingerprint(key: str) -> str:
    """A short name for a bare key, from which the key cannot be recovered."""
    return "key-" + hashlib.sha256(b"stellar-live-source api key name\0" + key.encode()).hexdigest()[:8]


def parse_keys(text: str) -> dict[str, bytes]:
    """Name -> digest of each key in the file's text. A ValueError names the
    line of a problem, never its content."""
    keys: dict[str, bytes] = {}
    seen: set[bytes] = set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, key = line.partition(":")
        if not sep:
            name, key = "", name
        name, key = name.strip(), key.strip()
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"line {n}: the key is empty or holds white space")
        if sep and not name:
            raise ValueError(f"line {n}: the name before ':' is empty")
        name = name or fingerprint(key)
        if name in keys:
            raise ValueError(f"line {n}: the name {name!r} is used twice")
        digest = _digest(key)
        if digest in seen:
            raise ValueError(f"line {n}: the same key appears twice")
        seen.add(digest)
        keys[name] = digest
    if not keys:
        raise ValueError("it holds no key")
    return keys


def _signature(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)  # follows symlinks: a Secret's ..data swap changes the inode
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _read(path: str) -> tuple[tuple[int, int, int, int], dict[str, bytes]]:
    sig = _signature(path)
    with open(path, encoding="utf-8") as f:
        return sig, parse_keys(f.read())


class ApiKeys:
    """The keys the door accepts; ``name_of`` checks one in constant time."""

    def __init__(self, path: str = "", interval: float = WATCH_INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self._keys: dict[str, bytes] = {}
        self._sig: tuple[int, int, int, int] | None = None
        self._failed: object = None  # the signature whose failure was logged: logged once
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0  # successful re-reads, for tests and logs

    @classmethod
    def from_config(cls, config: Any, interval: float = WATCH_INTERVAL) -> ApiKeys:
        keys = cls(config.security.api_keys_file, interval)
        if config.security.api_key_required or keys.path:
            keys.load()
        return keys

    def load(self) -> None:
        """Read the file now; ConfigError (naming the setting and file) if it cannot be used."""
        if not self.path:
            raise ConfigError("API_KEY_REQUIRED=true needs API_KEYS_FILE: no keys file is set")
        try:
            self._sig, self._keys = _read(self.path)
        except OSError as exc:
            raise ConfigError(f"API_KEYS_FILE={self.path}: cannot be read: {exc.strerror}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"API_KEYS_FILE={self.path}: {_why(exc)}") from None

    @property
    def names(self) -> list[str]:
        return sorted(self._keys)

    def name_of(self, presented: str | bytes) -> str | None:
        """The name of the key presented, or None: compared with every key, no early exit."""
        digest = _digest(presented)
        found = None
        for name, known in self._keys.items():
            if hmac.compare_digest(known, digest) and found is None:
                found = name
        return found

    # -- watching --
    def start(self) -> None:
        if self._task is None and self.path:
            self._task = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception as exc:  # never let the watcher die: log and keep watching
                log.warning("API keys watcher: %s", type(exc).__name__)

    async def check(self) -> bool:
        """Re-read the file if it changed; True when new keys were taken."""
        path = self.path
        if not path:
            return False
        try:
            sig = await asyncio.to_thread(_signature, path)
            if sig == self._sig:
                return False
            sig, keys = await asyncio.to_thread(_read, path)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            marker = (path, type(exc).__name__, str(getattr(exc, "strerror", "")))
            if marker != self._failed:
                self._failed = marker
                log.warning("API_KEYS_FILE=%s: %s; the keys loaded before stay in use", path, _why(exc))
            return False
        self._sig, self._keys, self._failed = sig, keys, None
        self.reloads += 1
        log.info("API keys reloaded from %s: %d keys", path, len(keys))
        return True

    def update(self, config: Any) -> None:
        """A reload: a new API_KEYS_FILE is read at the next poll (sooner: ``await check()``)."""
        path = config.security.api_keys_file
        if path != self.path:
            self.path, self._sig, self._failed = path, None, None
            if self._task is None:
                with contextlib.suppress(RuntimeError):  # no running loop: started with the app
                    self.start()


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"cannot be read: {exc.strerror}"
    if isinstance(exc, UnicodeDecodeError):
        return "is not UTF-8 text"
    return f"not a keys file: {exc}"
