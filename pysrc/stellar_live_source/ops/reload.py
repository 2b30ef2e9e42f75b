"""Hot reload: a new configuration, checked against the running one, applied
whole or not at all.

A reload (SIGHUP, or a watched file that changed) loads the configuration the
way start-up did: the same environment over the same file, so a key set in the
environment still wins (and a file change to such a key is logged as having
no effect). Then:

- the file is invalid: nothing changes; one log line says why (``invalid``);
- a ``restart``-class setting differs: refused whole, one log line per such
  setting, the old configuration stays (``refused``);
- otherwise the application is handed the new configuration and what changed
  (``applied``); ``live`` settings apply at once, ``new-streams`` ones to calls
  that start after it.

The watcher polls ``os.stat`` (following symlinks, so a Kubernetes ConfigMap or
Secret's atomic ``..data`` swap is seen) of every watched file. Nothing here
imports the server or the lake: the application hands in how to apply.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import ConfigError
from .config import SETTINGS, Config, Setting, text_of

log = logging.getLogger("stellar_live_source.reload")

APPLIED, REFUSED, INVALID = "applied", "refused", "invalid"
RESULTS = (APPLIED, REFUSED, INVALID)

#: Settings whose values are never logged: the HTTP headers (credentials,
#: often). API key contents live in API_KEYS_FILE, whose path may be shown.
SECRET: frozenset[str] = frozenset(s.env for s in SETTINGS if s.kind == "headers")


@dataclass(frozen=True, slots=True)
class Change:
    setting: Setting
    old: str
    new: str

    def __str__(self) -> str:
        shown = "(hidden)" if self.setting.env in SECRET else self.new
        return f"{self.setting.env}={shown}"


def changes(old: Config, new: Config) -> list[Change]:
    """Every setting whose value differs, in the table's order."""
    pairs = ((s, text_of(old, s), text_of(new, s)) for s in SETTINGS)
    return [Change(s, before, after) for s, before, after in pairs if before != after]


def watched_files(config_file: str) -> list[str]:
    """The files a change of which means a reload: the configuration file. (The
    API keys file and the TLS files are watched by the parts that read them,
    which take new paths from a reload.)"""
    return [config_file] if config_file else []


def _file_values(path: str) -> dict[str, str]:
    """``section.key`` -> the text written, of a YAML file (best effort: {} when unreadable)."""
    if not path:
        return {}
    try:
        with open(path, "rb") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return {}
    out: dict[str, str] = {}
    if isinstance(doc, dict):
        for section, body in doc.items():
            if isinstance(body, dict):
                out.update((f"{section}.{key}", repr(value)) for key, value in body.items())
    return out


class Reloader:
    """Loads, checks and hands over a new configuration; counts the results.

    ``load`` builds a Config (raises ConfigError); ``apply`` is handed the new
    Config and its changes; ``count`` is told each result (applied, refused,
    invalid)."""

    def __init__(
        self,
        config: Config,
        load: Callable[[], Config],
        apply: Callable[[Config, list[Change]], None],
        *,
        config_file: str = "",
        environ: Mapping[str, str] | None = None,
        count: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self._load = load
        self._apply = apply
        self.config_file = config_file
        self._environ = os.environ if environ is None else environ
        self._count = count or (lambda result: None)
        self._file = _file_values(config_file)

    def _from_environment(self, s: Setting) -> str | None:
        for name in (s.env, *s.aliases):
            if self._environ.get(name, "") != "":
                return name
        return None

    def _note_shadowed(self) -> None:
        """File changes to keys the environment sets: logged, as having no effect."""
        now = _file_values(self.config_file)
        for s in SETTINGS:
            if self._file.get(s.yaml_key) != now.get(s.yaml_key):
                name = self._from_environment(s)
                if name is not None:
                    log.warning(
                        "reload: %s changed in %s but has no effect: the environment sets %s",
                        s.yaml_key,
                        self.config_file,
                        name,
                    )
        self._file = now

    def reload(self, why: str = "reload") -> str:
        """One reload; returns its result (applied, refused or invalid)."""
        try:
            new = self._load()
        except ConfigError as exc:
            log.error("%s: configuration not reloaded, nothing changed: %s", why, "; ".join(exc.problems))
            return self._done(INVALID)
        self._note_shadowed()
        found = changes(self.config, new)
        restart = [c for c in found if c.setting.reload == "restart"]
        if restart:
            for c in restart:
                log.error(
                    "%s: refused: %s changed (%s -> %s) and needs a restart; the old configuration stays",
                    why,
                    c.setting.env,
                    "(hidden)" if c.setting.env in SECRET else c.old,
                    "(hidden)" if c.setting.env in SECRET else c.new,
                )
            return self._done(REFUSED)
        try:
            self._apply(new, found)
        except ConfigError as exc:  # a part refused it before changing anything (TLS files that do not load)
            log.error("%s: configuration not reloaded, nothing changed: %s", why, "; ".join(exc.problems))
            return self._done(INVALID)
        self.config = new
        if found:
            log.info("%s: applied %s", why, ", ".join(map(str, found)))
        else:
            log.info("%s: nothing changed", why)
        return self._done(APPLIED)

    def _done(self, result: str) -> str:
        self._count(result)
        return result


class FileWatcher:
    """Polls ``os.stat`` of the files ``paths()`` names; calls ``changed`` with
    those whose identity, size or times changed (appearing and vanishing too)."""

    def __init__(
        self, paths: Callable[[], Iterable[str]], changed: Callable[[list[str]], object], interval: float = 1.0
    ) -> None:
        self._paths = paths
        self._changed = changed
        self.interval = interval
        self._seen: dict[str, Any] = {p: _signature(p) for p in paths()}

    def poll(self) -> list[str]:
        """The watched files changed since the last poll (and remembers them)."""
        now = {p: _signature(p) for p in self._paths()}
        moved = [p for p, sig in now.items() if p in self._seen and self._seen[p] != sig]
        self._seen = now
        return moved

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                moved = self.poll()
                if moved:
                    self._changed(moved)
            except Exception:  # a watcher that died would stop every later reload
                log.exception("file watcher")


def _signature(path: str) -> Any:
    try:
        st = os.stat(path)  # follows symlinks: a ..data swap changes the inode
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
