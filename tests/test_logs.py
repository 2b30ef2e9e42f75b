"""Logs (issue 14): JSON lines (or text), the call's correlation ID on every
line of that call and in its initial metadata, progress lines per
LOG_PROGRESS_LEDGERS, and no secret anywhere in what the server prints."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import socket
import uuid
from typing import Any

import grpc
import pytest

from stellar_live_source import api
from stellar_live_source.ops import context, logs

from .conftest import needs_testdata
from .service_storage_support import s3_env
from .service_support import SHARED_LAKE, Served, env_for, server_process
from .support.objectserver import ObjectServer

FIRST = 1410048  # SHARED_LAKE: 1410048..1410367, 64 ledgers an object
EVERY = 64
BUCKET = "logs-lake"
KEY = "sk-logtest-alice-5f1e2d3c4b5a69788796a5b4"
WRONG_KEY = "sk-logtest-wrong-0a1b2c3d4e5f60718293a4b5"
AWS_KEY_ID = "AKIALOGTEST7Q3Z9X2W1"
AWS_SECRET = "logtest/secret+K9vQ2mN8xR4tY7uI1oP3aS6dF0gH5jL"
AWS_TOKEN = "logtest-session-token-Zx81Qw72Er63Ty54"
BAD_IDS = ("has space", "x" * 129, "semi;colon", "")


def output(served: Served) -> str:
    """Everything the server printed (stdout and stderr), once it has ended."""
    served.proc.terminate()
    out, _ = served.proc.communicate(timeout=20)
    return out


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the server printed nothing"
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    return out


async def stream(addr: str, start: int, end: int, metadata: tuple[tuple[str, str], ...] = ()) -> tuple[str, int]:
    """Stream start..end; (the x-request-id the server sent back, ledgers received)."""
    async with grpc.aio.insecure_channel(addr) as ch:
        req = api.StreamLedgersRequest(start_ledger=start, end_ledger=end).SerializeToString()
        call: Any = ch.unary_stream(api.STREAM_METHOD)(req, metadata=metadata, timeout=30)
        initial = dict(await call.initial_metadata())
        n = len([m async for m in call])
        return str(initial[logs.REQUEST_ID]), n


async def unary_status(addr: str, metadata: tuple[tuple[str, str], ...]) -> tuple[grpc.StatusCode, str | None]:
    """A range call: its status and the x-request-id sent back."""
    async with grpc.aio.insecure_channel(addr) as ch:
        req = api.GetLedgerRangeRequest(start_ledger=FIRST, end_ledger=FIRST + 3).SerializeToString()
        call: Any = ch.unary_unary(api.RANGE_METHOD)(req, metadata=metadata, timeout=10)
        try:
            await call
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as err:
            code = err.code()
        return code, dict(await call.initial_metadata()).get(logs.REQUEST_ID)


def is_uuid4(text: str) -> bool:
    try:
        return uuid.UUID(text).version == 4 and str(uuid.UUID(text)) == text
    except ValueError:
        return False


def progress_lines(lines: list[dict[str, Any]], start: int) -> list[dict[str, Any]]:
    return [r for r in lines if r["message"].startswith(f"stream from {start}: ")]


@needs_testdata
def test_request_id_comes_back_and_is_on_every_line_of_its_call_with_progress_per_run():
    env = env_for(SHARED_LAKE, LOG_FORMAT="json", LOG_LEVEL="debug", LOG_PROGRESS_LEDGERS=str(EVERY))
    with server_process(env) as served:

        async def calls() -> list[tuple[str, int]]:
            got = [await stream(served.addr, FIRST, FIRST + 319, (("x-request-id", "abc-123"),))]
            for i, bad in enumerate(BAD_IDS[:3]):  # too long, bad characters: each replaced by a new UUID4
                start = FIRST + 64 * (i + 1)
                got.append(await stream(served.addr, start, FIRST + 319, (("x-request-id", bad),)))
            got.append(await stream(served.addr, FIRST + 256, FIRST + 319))  # none sent: one made
            return got

        got = asyncio.run(calls())
        text = output(served)
    lines = json_lines(text)
    for r in lines:
        assert {"time", "level", "logger", "message"} <= r.keys(), r
        assert r["time"].endswith("+00:00"), r
    assert got[0] == ("abc-123", 320)
    made = [rid for rid, _ in got[1:]]
    assert all(is_uuid4(rid) for rid in made) and len(set(made)) == len(made), made
    for bad in BAD_IDS[:3]:
        assert bad not in text
    for (rid, n), start in zip(got, (FIRST, FIRST + 64, FIRST + 128, FIRST + 192, FIRST + 256), strict=True):
        mine = progress_lines(lines, start)
        assert len(mine) == n // EVERY, (start, n, mine)  # one per LOG_PROGRESS_LEDGERS, never one per ledger
        assert [r["message"] for r in mine] == [
            f"stream from {start}: {k * EVERY} ledgers sent" for k in range(1, len(mine) + 1)
        ]
        # Every line written for this call carries its ID (and its client), and no other call's.
        of_call = [r for r in lines if r.get("request_id") == rid]
        assert of_call and all(r in of_call for r in mine), (rid, mine)
        assert all(r["client"] == "127.0.0.1" for r in of_call)
    calls_ids = {rid for rid, _ in got}
    assert {r["request_id"] for r in lines if "request_id" in r} <= calls_ids
    assert not any("Traceback" in line for line in text.splitlines())


@needs_testdata
def test_text_format_gives_human_lines():
    env = env_for(SHARED_LAKE, LOG_FORMAT="text", LOG_PROGRESS_LEDGERS=str(EVERY))
    with server_process(env) as served:
        rid, n = asyncio.run(stream(served.addr, FIRST, FIRST + 127, (("x-request-id", "text-1"),)))
        text = output(served)
    assert (rid, n) == ("text-1", 128)
    lines = [line for line in text.splitlines() if line.strip()]
    assert any(" INFO stellar_live_source.server: listening on " in line for line in lines), lines
    progress = [line for line in lines if f"stream from {FIRST}: " in line]
    assert len(progress) == 2 and all(line.endswith("[request_id=text-1 client=127.0.0.1]") for line in progress)
    for line in lines:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)


@pytest.fixture
def object_server(monkeypatch) -> Any:
    with ObjectServer(auth="s3") as s:
        s.load_folder(BUCKET, SHARED_LAKE)
        yield s


@needs_testdata
def test_no_secret_appears_in_anything_the_server_prints(tmp_path, object_server):
    """API keys (right and wrong, in both header forms) and the storage
    credentials never appear in the server's output, at debug level, through
    good and refused calls and a SIGTERM; every line is JSON."""
    keys = tmp_path / "keys"
    keys.write_text(f"alice:{KEY}\n")
    env = s3_env(
        object_server.url,
        BUCKET,
        API_KEY_REQUIRED="true",
        API_KEYS_FILE=str(keys),
        ALLOW_INSECURE_API_KEYS="true",
        LOG_LEVEL="debug",
        LOG_FORMAT="json",
        LOG_PROGRESS_LEDGERS=str(EVERY),
    ) | {"AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_SESSION_TOKEN": AWS_TOKEN}
    with server_process(env) as served:

        async def calls() -> None:
            rid, n = await stream(served.addr, FIRST, FIRST + 127, (("authorization", f"Bearer {KEY}"),))
            assert n == 128
            assert (await unary_status(served.addr, (("x-api-key", KEY), ("x-request-id", "ok-1")))) == (
                grpc.StatusCode.OK,
                "ok-1",
            )
            for md in (
                (("authorization", f"Bearer {WRONG_KEY}"),),
                (("x-api-key", WRONG_KEY), ("x-request-id", "wrong-1")),
                (("authorization", f"Basic {WRONG_KEY}"),),
                (),
            ):
                code, sent_back = await unary_status(served.addr, md)
                assert code == grpc.StatusCode.UNAUTHENTICATED and sent_back  # refused calls get an ID too
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stream(served.addr, FIRST, FIRST + 3, (("x-api-key", WRONG_KEY),))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

        asyncio.run(calls())
        text = output(served)
    assert object_server.stats["refused"] == 0 and text
    for secret in (KEY, WRONG_KEY, AWS_SECRET, AWS_TOKEN, AWS_KEY_ID):
        assert secret not in text, secret
    for part in (KEY, WRONG_KEY, AWS_SECRET, AWS_TOKEN):  # nor a recognisable piece of one
        assert not re.search(re.escape(part[-16:]), text), part
    lines = json_lines(text)
    assert any(r["message"].startswith("listening on") for r in lines)
    assert len(progress_lines(lines, FIRST)) == 2
    assert not any("exception" in r for r in lines), [r for r in lines if "exception" in r]


def test_request_ids_kept_or_replaced():
    assert logs.request_id_of([("x-request-id", "abc-123")]) == "abc-123"
    assert logs.request_id_of([("x-request-id", "A.b_c:d-9" * 14)[:128]]) == ("A.b_c:d-9" * 14)[:128]
    for bad in BAD_IDS:
        assert is_uuid4(logs.request_id_of([("x-request-id", bad)]))
    assert is_uuid4(logs.request_id_of([("x-request-id-bin", b"\x00")]))
    assert is_uuid4(logs.request_id_of(None))


def test_json_lines_carry_the_call_context_and_the_exception():
    buf = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.setup("debug", "json", buf)
        log = logging.getLogger("stellar_live_source.test")
        log.info("outside %s", "any call")
        t1, t2 = context.request_id.set("r-1"), context.client_name.set("alice")
        try:
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("inside")
        finally:
            context.client_name.reset(t2)
            context.request_id.reset(t1)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    outside, inside = (json.loads(line) for line in buf.getvalue().splitlines())
    assert outside["message"] == "outside any call" and outside["level"] == "info"
    assert "request_id" not in outside and "client" not in outside
    assert outside["logger"] == "stellar_live_source.test"
    assert inside["request_id"] == "r-1" and inside["client"] == "alice" and inside["level"] == "error"
    assert "ValueError: boom" in inside["exception"]


@needs_testdata
def test_what_a_client_can_cause_logs_no_traceback():
    """Malformed requests, cancels (at once, and mid-stream) and bad HTTP on
    the health port: no traceback, even at debug level; every line is JSON."""
    env = env_for(SHARED_LAKE, LOG_FORMAT="json", LOG_LEVEL="debug")
    with server_process(env) as served:

        async def calls() -> None:
            async with grpc.aio.insecure_channel(served.addr) as ch:
                method: Any = ch.unary_stream(api.STREAM_METHOD)
                bad = method(b"\xff\xff\xff", timeout=10)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    _ = [m async for m in bad]
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                req = api.StreamLedgersRequest(start_ledger=FIRST, end_ledger=0).SerializeToString()
                for _ in range(20):  # cancelled before anything is sent back
                    method(req, timeout=10).cancel()
                tip = method(req, timeout=10)
                n = 0
                async for _ in tip:
                    n += 1
                    if n == 100:
                        break
                tip.cancel()  # mid-stream, at the tip
                await asyncio.sleep(0.3)

        asyncio.run(calls())
        port = served.ports["health"]
        assert port
        for garbage in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: " + b"x" * 70000 + b"\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(garbage)
                sock.recv(1024)  # its 4xx
        text = output(served)
    lines = json_lines(text)
    assert "Traceback" not in text
    assert not [r for r in lines if "exception" in r]


def test_lines_carry_the_trace_id_when_tracing_names_one():
    """ops.tracing.current_trace_id is what log lines ask by default; None (tracing off): no field."""
    from stellar_live_source.ops import tracing

    assert logs._current_trace_id() is tracing.current_trace_id()  # off in tests: None
    buf = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.setup("info", "json", buf)
        logs.use_trace_ids(lambda: "0af7651916cd43dd8448eb211c80319c")
        logging.getLogger("stellar_live_source.test").info("traced")
        logs.use_trace_ids(lambda: None)
        logging.getLogger("stellar_live_source.test").info("not traced")
    finally:
        logs.use_trace_ids(tracing.current_trace_id)
        root.handlers[:] = handlers
        root.setLevel(level)
    traced, untraced = (json.loads(line) for line in buf.getvalue().splitlines())
    assert traced["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert "trace_id" not in untraced
