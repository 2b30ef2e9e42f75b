"""Prometheus metrics: a few narrow hooks the service calls; nothing here sits
on the path ledgers travel."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from .. import __version__
from ..core import BACKEND, index
from ..core import decode as core_decode
from ..core.zstd import ZSTD_VERSION

PREFIX = "stellar_live_source"


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.info = Info(f"{PREFIX}_build", "Version and loaded core backend", registry=r)
        self.info.info(
            {"version": __version__, "core_backend": BACKEND, "zstd": ZSTD_VERSION, "header_hash": index.SHA256}
        )
        self.streams_active = Gauge(f"{PREFIX}_streams_active", "Streams being served", registry=r)
        self.streams_started = Counter(f"{PREFIX}_streams_started", "Streams started", registry=r)
        self.streams_ended = Counter(f"{PREFIX}_streams_ended", "Streams ended, by gRPC status", ["code"], registry=r)
        self.ledgers_sent = Counter(f"{PREFIX}_ledgers_sent", "Ledgers sent to clients", registry=r)
        self.bytes_sent = Counter(f"{PREFIX}_bytes_sent", "RawLedger bytes sent to clients", registry=r)
        self.range_calls = Counter(
            f"{PREFIX}_range_calls", "GetLedgerRange calls, by gRPC status", ["code"], registry=r
        )
        self.auth_failures = Counter(
            f"{PREFIX}_auth_failures", "Calls refused for a missing or wrong API key, by reason", ["reason"], registry=r
        )
        self.refusals = Counter(
            f"{PREFIX}_refusals", "Calls refused by a limit (RESOURCE_EXHAUSTED), by limit", ["limit"], registry=r
        )
        self.newest_ledger = Gauge(f"{PREFIX}_lake_newest_ledger", "Newest ledger in the lake", registry=r)
        self.cache_bytes = Gauge(f"{PREFIX}_cache_bytes", "Bytes of decoded objects cached", registry=r)
        self.storage_fetches = Gauge(f"{PREFIX}_storage_fetches", "Object reads from storage", registry=r)
        self.fallback_ledgers = Gauge(
            f"{PREFIX}_xdr_fallback_ledgers", "Ledgers delimited by the hash-chain fallback", registry=r
        )
        self.fallback_ledgers.set_function(lambda: core_decode.Stats.fallback_ledgers)
        self.breaker_state = Gauge(
            f"{PREFIX}_breaker_state",
            "Storage circuit breaker per backend: 0 closed, 1 half-open, 2 open",
            ["backend"],
            registry=r,
        )
        self.tls_cert_expiry = Gauge(
            f"{PREFIX}_tls_cert_expiry_timestamp_seconds",
            "When the served TLS certificate expires, Unix seconds (0 with TLS off)",
            registry=r,
        )
        self.config_reloads = Counter(
            f"{PREFIX}_config_reloads", "Configuration reloads, by result", ["result"], registry=r
        )
        for result in ("applied", "refused", "invalid"):
            self.config_reloads.labels(result)

    def watch_lake(self, lake: Any) -> None:
        """Read the lake's counters at scrape time (handed the lake: ops imports none of it)."""
        self.cache_bytes.set_function(lambda: lake.cache.bytes)
        self.storage_fetches.set_function(lambda: lake.fetches)
        breaker = lake.breaker
        self.breaker_state.labels(lake.storage.kind).set_function(lambda: breaker.state)
