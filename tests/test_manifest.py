"""The lake manifest as SEP-54 and the exporter write it: ``ledgersPath``,
``networkPassphrase`` (and NETWORK_PASSPHRASE), ``version`` (reported, never
refused), unknown fields ignored, and ``MANIFEST_PATH``. Served from folder
lakes built from the shared test ledgers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stellar_live_source.errors import LakeConfigError

from .conftest import LEDGERS
from .service_support import collect, env_for, index_by_seq, running_app, sha

SOURCE = LEDGERS / "testnet" / "datastore_testbucket_997-999"  # 1 ledger per file, 64000 per partition
TESTNET = "Test SDF Network ; September 2015"


def lake_at(tmp_path: Path, manifest: dict, *, ledgers_path: str = "", manifest_name: str = ".config.json") -> Path:
    """The three test ledgers under ``ledgers_path``, with ``manifest`` at ``manifest_name``."""
    root = tmp_path / "lake"
    shutil.copytree(SOURCE / "FFFFFFFF--0-63999", root / ledgers_path / "FFFFFFFF--0-63999")
    (root / manifest_name).parent.mkdir(parents=True, exist_ok=True)
    (root / manifest_name).write_text(json.dumps(manifest))
    return root


def sep54(**fields: object) -> dict:
    base = {"networkPassphrase": TESTNET, "compression": "zstd", "ledgersPerBatch": 1, "batchesPerPartition": 64000}
    return {**base, **fields}


async def test_ledgers_path_version_and_network_are_used_and_unknown_fields_ignored(tmp_path):
    manifest = sep54(version="galexie-v25.1.0", ledgersPath="ledgers/pubnet", somethingNew={"x": 1})
    lake = lake_at(tmp_path, manifest, ledgers_path="ledgers/pubnet")
    index = index_by_seq()
    async with running_app(env_for(lake)) as (app, addr):
        got = await collect(addr, 997, 999)
        assert [sha(x) for _, x in got] == [index[s]["sha256"] for s in (997, 998, 999)]
        report = app.health_report()
        assert (report["network"], report["exporter_version"]) == (TESTNET, "galexie-v25.1.0")
        assert report["storage"].endswith("/lake/ledgers/pubnet/")


async def test_an_unknown_version_is_reported_not_refused(tmp_path):
    lake = lake_at(tmp_path, sep54(version="99.0-from-the-future"))
    async with running_app(env_for(lake)) as (app, addr):
        assert app.health_report()["exporter_version"] == "99.0-from-the-future"
        assert len(await collect(addr, 997, 997)) == 1


async def test_manifest_path_names_the_manifest(tmp_path):
    lake = lake_at(tmp_path, sep54(ledgersPerBatch=1), manifest_name="meta/lake.json")
    async with running_app(env_for(lake, MANIFEST_PATH="meta/lake.json")) as (app, _addr):
        assert app.lake is not None and app.lake.layout.files_per_partition == 64000
        assert app.lake.network == TESTNET
    # Without it the default .config.json is absent: the layout falls back to the defaults (64 per file).
    async with running_app(env_for(lake)) as (app, _addr):
        assert app.lake is not None and app.lake.layout.ledgers_per_file == 64 and app.lake.network == ""


async def test_network_passphrase_setting_agrees_or_refuses(tmp_path):
    lake = lake_at(tmp_path, sep54())
    async with running_app(env_for(lake, NETWORK_PASSPHRASE=TESTNET)) as (app, _addr):
        assert app.lake is not None and app.lake.network == TESTNET
    with pytest.raises(LakeConfigError, match="NETWORK_PASSPHRASE='Public Global Stellar Network ; September 2015'"):
        async with running_app(env_for(lake, NETWORK_PASSPHRASE="Public Global Stellar Network ; September 2015")):
            pass
    # A manifest without a passphrase: the setting is the served network.
    bare = lake_at(tmp_path / "bare", {"ledgersPerBatch": 1, "batchesPerPartition": 64000})
    async with running_app(env_for(bare, NETWORK_PASSPHRASE="Custom ; 2026")) as (app, _addr):
        assert app.lake is not None and app.lake.network == "Custom ; 2026"


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"ledgersPath": "../elsewhere"}, "ledgersPath '../elsewhere' is not a plain path"),
        ({"ledgersPath": "a//b"}, "is not a plain path"),
        ({"ledgersPath": 7}, "ledgersPath is not a string: 7"),
        ({"networkPassphrase": ["x"]}, "networkPassphrase is not a string"),
        ({"version": 1.0}, "version is not a string: 1.0"),
    ],
)
async def test_hostile_manifest_fields_are_refused_naming_the_field(tmp_path, fields, needle):
    lake = lake_at(tmp_path, sep54(**fields))
    with pytest.raises(LakeConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        async with running_app(env_for(lake)):
            pass
