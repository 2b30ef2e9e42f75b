"""What a log line knows about the call it is written for: context variables
set by the server's door for each call and read by the logging filter
(``ops.logs``) and, when tracing is on, by the call's span.

They live in ``ops`` so that observability code reads them without importing
the server; the server sets them.
"""

from __future__ import annotations

from contextvars import ContextVar

#: The client of the call being served: a key's name or a peer's address.
client_name: ContextVar[str] = ContextVar("client_name", default="-")

#: The call's correlation ID: the client's ``x-request-id`` when valid, else a new UUID4.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
