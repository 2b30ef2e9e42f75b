"""Builds the parts of the service from the typed configuration: storage, the
lake's and the streams' settings, metrics and readiness. ``serve`` hands them
to the application, which only starts and stops them; every command that
touches a lake opens it here. Nothing else turns configuration into parts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from .lake.lake import Lake, LakeSettings
from .lake.storage import Storage, open_storage
from .ops.config import RETRY_BACKOFF_CAP, Config
from .ops.metrics import Metrics
from .ops.readiness import Readiness
from .server.stream import StreamSettings

#: The lake shipped in the package, served when no lake is configured at all.
SAMPLE_LAKE = Path(__file__).with_name("sample_lake")


def storage_for(config: Config) -> Storage:
    """The storage the configuration names (nothing is asked of it yet)."""
    st = config.storage
    bucket = str(SAMPLE_LAKE) if st.uses_sample_lake else st.bucket_name
    return open_storage(
        st.type,
        base_url=st.http_base_url,
        headers=st.http_headers,
        bucket=bucket,
        prefix=st.path,
        region=st.region or None,
        endpoint=st.endpoint or None,
        force_path_style=st.force_path_style,
        anonymous=st.anonymous,
        timeout=st.timeout,
        max_inflight=st.max_inflight,
    )


def lake_settings(config: Config) -> LakeSettings:
    st = config.storage
    return LakeSettings(
        # Only what the operator set may contradict the lake's manifest.
        ledgers_per_file=st.ledgers_per_file if "LEDGERS_PER_FILE" in config.explicit else None,
        files_per_partition=st.files_per_partition if "FILES_PER_PARTITION" in config.explicit else None,
        default_ledgers_per_file=st.ledgers_per_file,
        default_files_per_partition=st.files_per_partition,
        retry_attempts=st.retry_attempts,
        retry_backoff=st.retry_backoff,
        retry_backoff_max=RETRY_BACKOFF_CAP,
        poll_interval=st.poll_interval,
        cache_bytes=st.cache_bytes,
        max_object_bytes=st.max_object_bytes,
        verify=config.stream.verify_hash_chain,
        unknown_arms=config.stream.xdr_unknown_arms,
        decode_workers=config.stream.decode_workers,
        max_inflight=st.max_inflight,
        breaker_failure_threshold=config.resilience.breaker_failure_threshold,
        breaker_reset_timeout=config.resilience.breaker_reset_timeout,
        manifest_path=st.manifest_path,
        network_passphrase=st.network_passphrase,
        search_from=st.http_search_from,
    )


def stream_settings(config: Config) -> StreamSettings:
    st = config.storage
    return StreamSettings(
        readahead_bytes=st.readahead_bytes,
        missing_object_wait=st.missing_object_wait,
        poll_interval=st.poll_interval,
        verify=config.stream.verify_hash_chain,
        range_max_ledgers=config.stream.range_max_ledgers,
        range_max_bytes=config.stream.range_max_bytes,
    )


@dataclass
class Parts:
    """What the application starts and stops; the lake opens at start."""

    config: Config
    storage: Storage
    lake_settings: LakeSettings
    stream_settings: StreamSettings
    metrics: Metrics
    readiness: Readiness

    async def open_lake(self) -> Lake:
        """The lake on this storage: checked, its manifest read (StorageConfigError,
        LakeConfigError, RetriesExhausted; the storage is closed on failure)."""
        try:
            return await Lake.open(self.storage, self.lake_settings)
        except BaseException:
            await self.storage.close()
            raise


def build(config: Config) -> Parts:
    return Parts(
        config,
        storage_for(config),
        lake_settings(config),
        stream_settings(config),
        Metrics(config.monitoring.slo_availability, config.monitoring.slo_window),
        Readiness(),
    )


@contextlib.asynccontextmanager
async def open_lake(config: Config) -> AsyncIterator[Lake]:
    """The configured lake, open for a command's use, closed after."""
    lake = await build(config).open_lake()
    try:
        yield lake
    finally:
        await lake.close()
