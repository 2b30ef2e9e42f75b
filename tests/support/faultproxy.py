"""A fault-injecting HTTP/1.1 reverse proxy for tests, in front of one endpoint
on 127.0.0.1. It runs its own event loop in its own thread, so boto3 threads and
the async code under test can share it. Each request either passes or meets
one fault (500/503, abrupt close, truncated body, "down"), drawn from a seeded
random.Random so a sequence of requests is reproducible."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from collections import deque

_LOCAL = ("127.0.0.1", "localhost", "::1")
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
_UPSTREAM_TIMEOUT = 30.0


class FaultProxy:
    """FaultProxy(target_host, target_port, seed=0); start(), stop(), url.

    Knobs, settable at any time from any thread (configure() sets several at once):
    fail_rate, drop_rate, truncate_rate (fractions of requests), delay (seconds
    before forwarding), down (close every request unanswered) and max_in_a_row.

    max_in_a_row (None: no limit) makes faults transient: a request identical
    to one that met that many faults in a row is forwarded. Independent faults
    would exhaust any retry budget now and then (at one in five, six in a row
    for some request of a few hundred about one run in a hundred); and with one
    seeded sequence shared by concurrent requests, a cluster of faults in it can
    land on one request's retries, as it did here one run in ten."""

    def __init__(self, target_host: str, target_port: int, seed: int = 0) -> None:
        if target_host not in _LOCAL:
            raise ValueError(f"FaultProxy only forwards to this machine, not {target_host!r}")
        self.target = (target_host, target_port)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.fail_rate = self.drop_rate = self.truncate_rate = 0.0
        self.delay = 0.0
        self.down = False
        self.max_in_a_row: int | None = None
        self._in_a_row: dict[tuple[str, str], int] = {}  # (method, path): faults met in a row
        names = ("connections", "seen", "forwarded", "failed", "dropped", "truncated", "refused")
        self._counts = dict.fromkeys(names, 0)
        self.log: deque[tuple[str, str, str]] = deque(maxlen=10_000)  # (method, path, outcome)
        self.port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            faulted = sum(self._counts[k] for k in ("failed", "dropped", "truncated", "refused"))
            return dict(self._counts, faulted=faulted)

    def configure(self, **knobs) -> None:
        with self._lock:
            for name, value in knobs.items():
                if name not in ("fail_rate", "drop_rate", "truncate_rate", "delay", "down", "max_in_a_row"):
                    raise AttributeError(name)
                setattr(self, name, value)

    def reset(self) -> None:
        self.configure(fail_rate=0.0, drop_rate=0.0, truncate_rate=0.0, delay=0.0, down=False, max_in_a_row=None)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="faultproxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error or not self.port:
            raise RuntimeError("the fault proxy did not start") from self._error
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _main(self) -> None:
        tasks: set[asyncio.Task] = set()

        async def handle(reader, writer):
            task = asyncio.current_task()
            assert task is not None  # (a connection's handler runs as a task)
            tasks.add(task)
            with self._lock:
                self._counts["connections"] += 1
            try:
                await self._serve(reader, writer)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                pass
            except asyncio.CancelledError:  # stop(); re-raising makes 3.11 log a traceback
                pass
            finally:
                tasks.discard(asyncio.current_task())
                writer.close()

        try:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
        except BaseException as e:
            self._error = e
            raise
        finally:
            self._ready.set()
        await self._stop.wait()
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    # -- one client connection -------------------------------------------------------

    def _decide(self, method: str, path: str) -> tuple[str, int, float, float]:
        """(outcome, status, cut fraction, delay); the same three draws per request,
        whatever the knobs, so a seed replays the same sequence."""
        with self._lock:
            r, status, cut = self._rng.random(), self._rng.choice((500, 503)), self._rng.random()
            self._counts["seen"] += 1
            if self.down:
                outcome = "refused"
            elif r < self.fail_rate:
                outcome = "failed"
            elif r < self.fail_rate + self.drop_rate:
                outcome = "dropped"
            elif r < self.fail_rate + self.drop_rate + self.truncate_rate:
                outcome = "truncated"
            else:
                outcome = "forwarded"
            if outcome in ("failed", "dropped", "truncated") and self.max_in_a_row is not None:
                met = self._in_a_row.get((method, path), 0)
                outcome = "forwarded" if met >= self.max_in_a_row else outcome
                self._in_a_row[(method, path)] = 0 if outcome == "forwarded" else met + 1
            elif outcome == "forwarded":
                self._in_a_row.pop((method, path), None)
            if outcome != "forwarded":
                self._counts[outcome] += 1
            if outcome in ("forwarded", "truncated"):
                self._counts["forwarded"] += 1
            return outcome, status, cut, self.delay

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # keep-alive: one request after another
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            request_line, headers = _parse_head(head)
            method, path, version = request_line.split(" ", 2)
            outcome, status, cut, delay = self._decide(method, path)
            self.log.append((method, path, outcome))
            if outcome in ("refused", "dropped"):
                _abort(writer)
                return
            if _header(headers, "expect").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await _read_body(reader, headers, request=True)
            if outcome == "failed":
                writer.write(f"HTTP/1.1 {status} Injected Fault\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
                continue
            if delay:
                await asyncio.sleep(delay)
            try:
                status_line, resp_headers, resp_body = await self._forward(request_line, headers, body, method)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            if outcome == "truncated" and not resp_body:  # nothing to cut: fail like a drop
                _abort(writer)
                return
            keep = version == "HTTP/1.1" and _header(headers, "connection").lower() != "close"
            reframed = _HOP | ({"content-length"} if resp_body is not None else set())  # HEAD keeps its length
            out = ["HTTP/1.1 " + status_line.split(" ", 1)[1]]  # re-framed below, whatever upstream spoke
            out += [f"{k}: {v}" for k, v in resp_headers if k.lower() not in reframed]
            if resp_body is not None:
                out.append(f"Content-Length: {len(resp_body)}")
            out.append("Connection: " + ("keep-alive" if keep else "close"))
            writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
            if outcome == "truncated":
                # Headers promise the whole body; part of it follows, then a plain
                # FIN once flushed (a reset could discard the part unread).
                writer.write(resp_body[: int(len(resp_body) * cut)])
                writer.transport.set_write_buffer_limits(0)
                await writer.drain()
                return
            writer.write(resp_body or b"")
            await writer.drain()
            if not keep:
                return

    async def _forward(self, request_line: str, headers: list, body: bytes, method: str):
        """One request upstream on a fresh connection ("Connection: close"), the whole
        response read: (status line, headers, body or None when it has none)."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*self.target), _UPSTREAM_TIMEOUT)
        try:
            lines = [request_line] + [f"{k}: {v}" for k, v in headers if k.lower() not in _HOP | {"content-length"}]
            lines += [f"Content-Length: {len(body)}", "Connection: close"]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _UPSTREAM_TIMEOUT)
            status_line, resp_headers = _parse_head(head)
            status = int(status_line.split(" ", 2)[1])
            if method == "HEAD" or status in (204, 304) or status < 200:
                return status_line, resp_headers, None
            body = await asyncio.wait_for(_read_body(reader, resp_headers), _UPSTREAM_TIMEOUT)
            return status_line, resp_headers, body
        finally:
            writer.close()


def _parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    first, *rest = head.decode("latin-1").split("\r\n")
    headers = []
    for line in rest:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return first, headers


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next((v for k, v in headers if k.lower() == name), "")


async def _read_body(reader: asyncio.StreamReader, headers: list, request: bool = False) -> bytes:
    if "chunked" in _header(headers, "transfer-encoding").lower():
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
            pass
        return b"".join(chunks)
    length = _header(headers, "content-length")
    if length:
        return await reader.readexactly(int(length))
    return b"" if request else await reader.read()  # a response without framing ends at EOF


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a reset, not a polite FIN: what a crashed peer looks like."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
