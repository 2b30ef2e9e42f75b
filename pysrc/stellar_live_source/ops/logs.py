"""Logging: one JSON object per line on stdout (``LOG_FORMAT=json``, the
default) or human lines for a terminal (``LOG_FORMAT=text``), at ``LOG_LEVEL``.

A JSON line holds ``time`` (ISO-8601, UTC), ``level``, ``logger``,
``message``, ``exception`` when there is one, and the context of the call it
was written for: ``request_id`` (the correlation ID), ``client`` (the key's
name or the peer's address) and ``trace_id`` when tracing is on. Lines
written outside any call carry none of the three.

Correlation IDs: a call's is the client's ``x-request-id`` metadata when it
is 1 to 128 characters of ``[A-Za-z0-9._:-]``, otherwise a new UUID4 (the
rejected value is neither used nor logged). The door sets it for each call
and returns it in the initial metadata.
"""

from __future__ import annotations

import datetime
import importlib
import json
import logging
import re
import sys
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from . import context

REQUEST_ID = "x-request-id"
#: Libraries whose debug lines hold request headers (credentials, tokens):
#: never below INFO, whatever LOG_LEVEL says.
QUIET = ("botocore", "boto3", "s3transfer", "urllib3", "google.auth", "google.cloud", "requests_oauthlib")
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

#: The trace ID of the current span, or None (tracing off, or no span): by
#: default ``ops.tracing.current_trace_id`` once that module exists (looked up
#: at the first log line); ``use_trace_ids`` sets another.
_trace_id: Callable[[], str | None] | None = None
_looked_up = False


def use_trace_ids(fn: Callable[[], str | None] | None) -> None:
    """Log lines carry ``trace_id`` from ``fn()`` (None: none)."""
    global _trace_id, _looked_up
    _trace_id, _looked_up = fn, True


def _current_trace_id() -> str | None:
    global _trace_id, _looked_up
    if not _looked_up:
        _looked_up = True
        try:
            tracing = importlib.import_module(f"{__package__}.tracing")
        except ImportError:
            tracing = None
        _trace_id = getattr(tracing, "current_trace_id", None)
    fn = _trace_id
    if fn is None:
        return None
    try:
        return fn()
    except Exception:  # a log line is never lost to tracing
        return None


def request_id_of(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The call's correlation ID: the client's valid ``x-request-id``, else a new UUID4."""
    for k, v in metadata or ():
        if k == REQUEST_ID:
            if isinstance(v, str) and _VALID_ID.fullmatch(v):
                return v
            break  # invalid (or binary): replaced, never echoed
    return str(uuid.uuid4())


class CallContext(logging.Filter):
    """Adds the call's ``request_id``, ``client`` and ``trace_id`` to each record (None outside a call)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = context.request_id.get()
        record.request_id = rid
        record.client = context.client_name.get() if rid is not None else None
        record.trace_id = _current_trace_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in ("request_id", "client", "trace_id"):
            value = getattr(record, field, None)
            if value is not None:
                out[field] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [request_id=... client=...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        extra = " ".join(
            f"{field}={value}"
            for field in ("request_id", "client", "trace_id")
            if (value := getattr(record, field, None)) is not None
        )
        return f"{line} [{extra}]" if extra else line


def setup(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> logging.Handler:
    """The root logger writes to ``stream`` (stdout) at ``level`` in ``fmt``
    (json or text); handlers set before are replaced. The handler."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(CallContext())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.INFO)
    return handler
