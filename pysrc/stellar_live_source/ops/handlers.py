"""gRPC method handlers with their behaviour wrapped: what an interceptor of
``grpc.aio`` returns, for any of the four kinds of call, keeping the
handler's request and response (de)serializers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

# (the handler's attribute, how to build one, whether it answers with a stream)
_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
)


def rewrapped(handler: Any, wrap: Callable[[Any, bool], Any]) -> Any:
    """``handler`` with its behaviour replaced by ``wrap(behaviour,
    streams_responses)``; where ``wrap`` returns None, ``handler`` as it is."""
    for attr, build, streams in _KINDS:
        behavior = getattr(handler, attr)
        if behavior:
            new = wrap(behavior, streams)
            return handler if new is None else build(new, handler.request_deserializer, handler.response_serializer)
    return handler
