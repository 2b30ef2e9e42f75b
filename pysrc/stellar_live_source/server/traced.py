"""Tracing of the ledger service's calls: a wrapper around each handler.

Tracing off (``ops.tracing.TRACER`` None): the handler is called as is, one
check per call and nothing per ledger. On: the call gets its span
(``ops.tracing.CallTrace``), a stream's context counts what is written (the
span splits on a long stream), and the span ends with the call's status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from ..ops import tracing

Handler = Callable[[Any, Any], Awaitable[Any]]


class _Counted:
    """The servicer context of a traced stream: each message written is told to the call's span."""

    __slots__ = ("_context", "_call")

    def __init__(self, context: Any, call: tracing.CallTrace) -> None:
        self._context = context
        self._call = call

    async def write(self, message: bytes) -> None:
        await self._context.write(message)
        self._call.wrote(len(message))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _code(context: Any) -> grpc.StatusCode:
    try:
        code = context.code()
    except Exception:
        code = None
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK


def traced(method: str, handler: Handler, streaming: bool, attrs: Callable[[Any], dict[str, Any]]) -> Handler:
    """``handler`` with a span per call when tracing is on; ``attrs(request)``: the request's attributes."""

    async def call(request: Any, context: Any) -> Any:
        if tracing.TRACER is None:
            return await handler(request, context)
        span = tracing.start_call(method, context.invocation_metadata(), attrs(request))
        if span is None:  # tracing stopped between the check and here
            return await handler(request, context)
        code, message = grpc.StatusCode.OK, ""
        try:
            if streaming:
                return await handler(request, _Counted(context, span))
            out = await handler(request, context)
            if isinstance(out, bytes | bytearray):
                span.wrote(len(out), 0)
            return out
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            code = _code(context)
            try:
                message = context.details() or ""
            except Exception:
                message = ""
            raise
        except BaseException as exc:
            code, message = grpc.StatusCode.UNKNOWN, type(exc).__name__
            raise
        finally:
            value = code.value[0]
            span.end(code.name, value, message)

    return call


def request_attrs(request: Any) -> dict[str, Any]:
    """The ledger range a request asks for (nothing for one that did not parse)."""
    start = getattr(request, "start_ledger", None)
    if start is None:
        return {}
    return {"stellar.start_ledger": int(start), "stellar.end_ledger": int(getattr(request, "end_ledger", 0))}
