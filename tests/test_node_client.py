"""A Node.js client (grpc-js, tests/node/stream.js) against the in-process
service: it must receive exactly the ledgers, bytes and statuses the Python
client does, so the API works for consumers that are not grpcio."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from stellar_live_source.client import Client

from .conftest import needs_testdata
from .service_support import SHARED_LAKE, collect, env_for, index_by_seq, running_app, sha

NODE = shutil.which("node")
NODE_DIR = Path(__file__).parent / "node"

pytestmark = needs_testdata


def node_binary() -> str:
    """Node.js, with the client's modules installed: without either the test
    fails (`make test` installs the modules; CI installs Node.js too)."""
    if NODE is None:
        pytest.fail("node is not on PATH: install Node.js >= 18 (and npm) to run the Node.js client test")
    if not (NODE_DIR / "node_modules").is_dir():
        pytest.fail(
            "tests/node/node_modules is missing: run `make test` (it runs"
            " `npm ci --prefix tests/node`), or that npm command yourself"
        )
    return NODE


@pytest.fixture(autouse=True)
def node_installed() -> None:
    """Checked before the server starts."""
    node_binary()


FIRST, LAST = 1410048, 1410367


async def node(*args: object, timeout: float = 60, env: dict[str, str] | None = None) -> tuple[int, list[str], str]:
    """Run stream.js; (exit code, stdout lines, stderr). Async so the
    in-process server keeps serving while Node talks to it. ``env``: added
    to this process's environment (the API key)."""
    proc = await asyncio.create_subprocess_exec(
        node_binary(),
        str(NODE_DIR / "stream.js"),
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env} if env else None,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return await proc.wait(), out.decode().splitlines(), err.decode()


def lines(ledgers: list[tuple[int, bytes]]) -> list[str]:
    """The Python side in stream.js's format."""
    return [f"{seq} {sha(xdr)} {len(xdr)}" for seq, xdr in ledgers]


@pytest.mark.parametrize("start,end", [(FIRST, LAST), (1410100, 1410200)], ids=["full", "mid-object"])
async def test_node_streams_the_same_bytes_as_python(start, end):
    index = index_by_seq()
    async with running_app(env_for(SHARED_LAKE)) as (_, addr):
        rc, got, err = await node(addr, start, end)
        want = await collect(addr, start, end)
    assert rc == 0, err
    assert [int(line.split()[0]) for line in got] == list(range(start, end + 1))
    assert got == lines(want)
    assert got == [f"{s} {index[s]['sha256']} {index[s]['xdr_len']}" for s in range(start, end + 1)]


async def test_node_get_ledger_range_matches_python():
    async with running_app(env_for(SHARED_LAKE)) as (_, addr):
        rc, got, err = await node(addr, "range", FIRST, FIRST + 50)
        async with Client(addr) as client:
            ledgers, latest = await client.ledger_range(FIRST, FIRST + 50, timeout=30)
    assert rc == 0, err
    assert len(ledgers) == 50
    assert got == lines(ledgers) + [f"LATEST {latest}"]
    assert latest == LAST


async def test_node_sees_invalid_argument_and_exits_2():
    async with running_app(env_for(SHARED_LAKE)) as (_, addr):
        rc, got, err = await node(addr, 1, 5)
    assert (rc, got) == (2, [])
    assert err.startswith("STATUS INVALID_ARGUMENT ") and "start_ledger" in err


async def test_node_sends_an_api_key(tmp_path):
    """Both header forms from grpc-js against a server requiring a key; none or a wrong one: UNAUTHENTICATED."""
    key = "sk-node-0123456789abcdef"
    keys = tmp_path / "keys"
    keys.write_text(f"node:{key}\n")
    env = env_for(SHARED_LAKE, API_KEY_REQUIRED="true", API_KEYS_FILE=str(keys), ALLOW_INSECURE_API_KEYS="true")
    start, end = 1410100, 1410120
    async with running_app(env) as (_, addr):
        want = lines(await collect_with_key(addr, key, start, end))
        rc, got, err = await node(addr, start, end, env={"STELLAR_LIVE_SOURCE_API_KEY": key})
        assert rc == 0, err
        assert got == want
        header = {"STELLAR_LIVE_SOURCE_API_KEY": key, "STELLAR_LIVE_SOURCE_API_KEY_HEADER": "x-api-key"}
        rc, got, err = await node(addr, "range", start, end + 1, env=header)
        assert rc == 0, err
        assert got[:-1] == want
        rc, _, err = await node(addr, start, end)
        assert rc == 2 and err.startswith("STATUS UNAUTHENTICATED"), err
        rc, _, err = await node(addr, start, end, env={"STELLAR_LIVE_SOURCE_API_KEY": "sk-wrong"})
        assert rc == 2 and err.startswith("STATUS UNAUTHENTICATED"), err


async def collect_with_key(addr: str, key: str, start: int, end: int) -> list[tuple[int, bytes]]:
    """The ledgers over a raw grpc.aio channel, the key in metadata (the Python
    client's own key support is tested with it)."""
    import grpc

    from stellar_live_source import api

    req = api.StreamLedgersRequest(start_ledger=start, end_ledger=end)
    async with grpc.aio.insecure_channel(addr) as ch:
        call = ch.unary_stream(
            api.STREAM_METHOD,
            request_serializer=api.StreamLedgersRequest.SerializeToString,
            response_deserializer=api.RawLedger.FromString,
        )(req, metadata=(("authorization", f"Bearer {key}"),), timeout=30)
        return [(m.sequence, m.ledger_close_meta_xdr) async for m in call]
