"""A small async client for Python consumers of the service.

    async with Client("localhost:50052") as client:
        async for seq, xdr in client.stream(1000, 2000):
            ...

``stream`` resumes by itself after ``UNAVAILABLE`` (storage down, a server
draining, a server not reachable) from the last ledger it delivered + 1, so a
consumer sees every ledger exactly once, in order; after ``max_retries`` tries
in a row without a new ledger it gives up and raises the last error. Other
statuses are raised as they come, as ``grpc.aio.AioRpcError``.

TLS: ``tls_ca`` (the CA file that signed the server's certificate; None: the
system's roots), ``tls_cert`` and ``tls_key`` (the client's certificate and
key, for mutual TLS); any of them, or ``tls=True``, makes the channel TLS.
``api_key`` is sent as ``authorization: Bearer KEY`` on every call (never logged).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Callable
from typing import Any

import grpc

from . import api
from .core.frame import parse_raw_ledger
from .errors import BadData, BadInputFile

# Real ledgers pass 4 MiB: clients must lift gRPC's default receive limit.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1)]

#: Called before each retry with the error, the retry's number (1, 2, ...) and the seconds it waits.
OnRetry = Callable[[grpc.aio.AioRpcError, int, float], None]


class OutOfOrder(BadData):
    """The server sent a ledger other than the next one (never expected)."""


class Client:
    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        tls: bool = False,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        api_key: str | None = None,
        max_retries: int | None = 5,
        retry_backoff: float = 0.5,
        retry_backoff_max: float = 10.0,
        on_retry: OnRetry | None = None,
    ) -> None:
        """``max_retries``: tries in a row after UNAVAILABLE without a new
        ledger before giving up (None: never give up); the waits between them
        double from ``retry_backoff`` up to ``retry_backoff_max``, with full jitter."""
        self.target = target
        if credentials is None and (tls or tls_ca or tls_cert or tls_key):
            credentials = tls_credentials(tls_ca, tls_cert, tls_key)
        self._metadata = api_key_metadata(api_key)
        self.channel = (
            grpc.aio.secure_channel(target, credentials, CHANNEL_OPTIONS)
            if credentials
            else grpc.aio.insecure_channel(target, CHANNEL_OPTIONS)
        )
        # Responses stay bytes: parse_raw_ledger reads them without a message object.
        self._stream: grpc.aio.UnaryStreamMultiCallable[Any, bytes] = self.channel.unary_stream(
            api.STREAM_METHOD,
            request_serializer=api.StreamLedgersRequest.SerializeToString,
            response_deserializer=None,
        )
        self._range = self.channel.unary_unary(
            api.RANGE_METHOD,
            request_serializer=api.GetLedgerRangeRequest.SerializeToString,
            response_deserializer=api.GetLedgerRangeResponse.FromString,
        )
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        self.on_retry = on_retry
        self.retries = 0  # in all, over every stream of this client

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def stream(
        self, start: int, end: int = 0, *, timeout: float | None = None
    ) -> AsyncGenerator[tuple[int, bytes], None]:
        """(sequence, LedgerCloseMeta XDR) from ``start`` to ``end`` inclusive (0: follow the tip forever)."""
        seq = start
        failures = 0  # tries in a row without a new ledger
        while True:
            call = self._stream(
                api.StreamLedgersRequest(start_ledger=seq, end_ledger=end), timeout=timeout, metadata=self._metadata
            )
            try:
                async for raw in call:
                    got, xdr = parse_raw_ledger(raw)
                    if got != seq:
                        call.cancel()
                        raise OutOfOrder(f"expected ledger {seq}, the server sent {got}")
                    failures = 0
                    yield got, xdr
                    seq += 1
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                if end and seq > end:  # the last ledger had arrived: a bounded stream is complete
                    return
                if self.max_retries is not None and failures >= self.max_retries:
                    raise
                failures += 1
                self.retries += 1
                wait = random.uniform(0, min(self.retry_backoff_max, self.retry_backoff * 2 ** (failures - 1)))
                if self.on_retry is not None:
                    self.on_retry(exc, failures, wait)
                await asyncio.sleep(wait)
            finally:
                call.cancel()

    async def ledger_range(
        self, start: int, end: int, *, timeout: float | None = None
    ) -> tuple[list[tuple[int, bytes]], int]:
        """``(ledgers, latest)``: what GetLedgerRange returns for [start, end)."""
        request = api.GetLedgerRangeRequest(start_ledger=start, end_ledger=end)
        resp: Any = await self._range(request, timeout=timeout, metadata=self._metadata)
        return [(x.sequence, x.ledger_close_meta_xdr) for x in resp.ledgers], resp.latest_ledger


def _read(what: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise BadInputFile(f"{what} {path}: {exc.strerror}") from None


def tls_credentials(ca: str | None = None, cert: str | None = None, key: str | None = None) -> grpc.ChannelCredentials:
    """Channel credentials from PEM files: the CA to trust (None: the system's
    roots) and, for mutual TLS, the client's certificate and key (both or neither)."""
    if bool(cert) != bool(key):
        raise ValueError("a client certificate needs its key, and a key its certificate (tls_cert and tls_key)")
    return grpc.ssl_channel_credentials(
        root_certificates=_read("TLS CA file", ca) if ca else None,
        private_key=_read("TLS key file", key) if key else None,
        certificate_chain=_read("TLS certificate file", cert) if cert else None,
    )


def api_key_metadata(api_key: str | None) -> tuple[tuple[str, str], ...] | None:
    """``authorization: Bearer KEY`` (surrounding whitespace, as a file's newline, dropped)."""
    if api_key is None:
        return None
    key = api_key.strip()
    if not key or any(c.isspace() or not c.isprintable() for c in key):
        raise ValueError("the API key is empty or holds spaces or control characters")
    return (("authorization", f"Bearer {key}"),)
