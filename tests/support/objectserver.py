"""A small, fast object server for tests and benchmarks: buckets in memory,
served over HTTP/1.1 on 127.0.0.1 in the shapes the lake's clients speak.

- S3, path style: GET and HEAD ``/BUCKET/KEY`` (with ``Range``), and
  ListObjectsV2 (``GET /BUCKET?list-type=2``). The same object route is the
  GCS XML API's.
- GCS JSON API: media GETs (``/storage/v1/b/B/o/NAME?alt=media``, also under
  ``/download``), object metadata, object listings and bucket metadata.
- Every object answer carries ``Last-Modified`` and ``ETag``, as real stores
  and the public lakes send them.

Injectable, settable at any time from any thread: ``delay`` (seconds before
every answer), random faults (``fail_rate`` 503s, ``reset_rate`` closes
without an answer, ``truncate_rate`` bodies cut short), and per-key rules
(``rule(key, fault)``: a status code, "reset", "truncate" or "hang";
with ``times=N``, only the next N requests for the key, then it is served).
``auth`` names what is accepted, comma-separated: ``s3`` (a SigV4
``Authorization`` header; the signature itself is not checked, no peer here
holds real keys) and ``bearer:TOKEN`` (that bearer token); anything else is
refused with 403 or 401. ``POST /token`` answers an OAuth token request with
TOKEN (google-auth's refresh, pointed here by a credentials file's
``token_uri``).

It runs its own event loop in its own thread (``with ObjectServer() as s``),
or as a process of its own for benchmarks, whose CPU is then measured apart:
``python -m tests.support.objectserver --bucket B --folder DIR [--delay S]``
prints the port it bound and serves until stdin closes (with ``--stats``,
then prints its counts and CPU seconds as one JSON line).

Counts (``stats``): requests by operation, answers by status, connections
open now, requests in flight now and at most, and requests whose connection
closed before they were answered (``aborted``: a client that gave up)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import hashlib
import json
import random
import sys
import threading
import time
from collections import Counter
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.sax.saxutils import escape

_MAX_HEAD = 64 << 10
_REASONS = {
    200: "OK",
    206: "Partial Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    416: "Range Not Satisfiable",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_S3_CODES = {400: "InvalidRequest", 401: "AccessDenied", 403: "AccessDenied", 416: "InvalidRange", 500: "InternalError"}
_S3_CODES[503] = "SlowDown"
FAULTS = ("reset", "truncate", "hang")


class _Object:
    __slots__ = ("data", "etag", "md5_b64", "modified", "http_date")

    def __init__(self, data: bytes, modified: float) -> None:
        digest = hashlib.md5(data, usedforsecurity=False).digest()
        self.data = data
        self.etag = '"' + digest.hex() + '"'
        self.md5_b64 = base64.b64encode(digest).decode()
        self.modified = modified
        self.http_date = formatdate(modified, usegmt=True)


class _Bucket:
    def __init__(self) -> None:
        self.objects: dict[str, _Object] = {}
        self.keys: list[str] = []  # sorted, for listings

    def put(self, key: str, data: bytes) -> None:
        if key not in self.objects:
            bisect.insort(self.keys, key)
        self.objects[key] = _Object(bytes(data), time.time())

    def delete(self, key: str) -> None:
        if self.objects.pop(key, None) is not None:
            del self.keys[bisect.bisect_left(self.keys, key)]

    def after(self, prefix: str, start_after: str | None, limit: int) -> tuple[list[str], bool]:
        """Keys under ``prefix`` strictly after ``start_after``, at most ``limit``; and whether more follow."""
        lo = bisect.bisect_left(self.keys, prefix)
        if start_after is not None:
            lo = max(lo, bisect.bisect_right(self.keys, start_after))
        out: list[str] = []
        for i in range(lo, len(self.keys)):
            key = self.keys[i]
            if not key.startswith(prefix):
                return out, False
            if len(out) == limit:
                return out, True
            out.append(key)
        return out, False


class ObjectServer:
    def __init__(self, *, delay: float = 0.0, auth: str | None = None, seed: int = 0) -> None:
        self.buckets: dict[str, _Bucket] = {}
        self.delay = delay
        self.auth = auth
        # What POST /token hands out: the token accepted at start (changing auth later does not change it).
        self.issued_token = self.token or "token"
        self.fail_rate = self.reset_rate = self.truncate_rate = 0.0
        self._rules: dict[str, str | int] = {}
        self._rule_left: dict[str, int] = {}  # rules that end after this many more requests
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.open_connections = 0
        self._connections: set[_Connection] = set()
        self.inflight = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None

    # -- contents and knobs (any thread) --
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bucket(self, name: str) -> _Bucket:
        with self._lock:
            return self.buckets.setdefault(name, _Bucket())

    def put(self, bucket: str, key: str, data: bytes) -> None:
        b = self.bucket(bucket)
        with self._lock:
            b.put(key, data)

    def delete(self, bucket: str, key: str) -> None:
        b = self.bucket(bucket)
        with self._lock:
            b.delete(key)

    def load_folder(self, bucket: str, folder: str | Path, prefix: str = "") -> list[str]:
        """Every file under ``folder`` (dot files too) as an object under ``prefix``; the keys."""
        root, keys = Path(folder), []
        prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            keys.append(prefix + path.relative_to(root).as_posix())
            self.put(bucket, keys[-1], path.read_bytes())
        return keys

    def configure(self, **knobs: float) -> None:
        with self._lock:
            for name, value in knobs.items():
                if name not in ("delay", "fail_rate", "reset_rate", "truncate_rate"):
                    raise AttributeError(name)
                setattr(self, name, value)

    def rule(self, key: str, fault: str | int | None, times: int | None = None) -> None:
        """Answer every request for object ``key`` with ``fault`` (None: clear),
        or only the next ``times`` requests for it."""
        if fault is not None and fault not in FAULTS and not isinstance(fault, int):
            raise ValueError(f"fault must be a status code or one of {FAULTS}: {fault!r}")
        with self._lock:
            self._rule_left.pop(key, None)
            if fault is None:
                self._rules.pop(key, None)
            else:
                self._rules[key] = fault
                if times is not None:
                    self._rule_left[key] = times

    # -- lifecycle --
    def start(self) -> ObjectServer:
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="objectserver", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or not self.port:
            raise RuntimeError("the object server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> ObjectServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _main(self) -> None:
        await self.serve()
        self._ready.set()
        assert self._stopped is not None
        await self._stopped.wait()
        await self.close()

    async def serve(self, port: int = 0) -> None:
        """Bind 127.0.0.1:``port`` on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._server = await self._loop.create_server(lambda: _Connection(self), "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self._connections):  # (Server.close_clients is Python 3.13+)
                if conn.transport is not None:
                    conn.transport.abort()
            await self._server.wait_closed()

    # -- answering --
    def _decide(self, key: str | None) -> str | int | None:
        with self._lock:
            if key is not None and key in self._rules:
                fault = self._rules[key]
                if key in self._rule_left:
                    self._rule_left[key] -= 1
                    if self._rule_left[key] <= 0:
                        del self._rules[key], self._rule_left[key]
                return fault
            r = self._rng.random()
            if r < self.fail_rate:
                return 503
            r -= self.fail_rate
            if r < self.reset_rate:
                return "reset"
            r -= self.reset_rate
            if r < self.truncate_rate:
                return "truncate"
            return None

    def answer(self, method: str, target: str, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body) for one request; faults are applied by the caller."""
        url = urlsplit(target)
        path, query = unquote(url.path), dict(parse_qsl(url.query, keep_blank_values=True))
        if headers.get("authorization"):
            self.stats["authorized"] += 1  # requests that carried credentials of any kind
        if method == "POST" and path == "/token":
            self.stats["token"] += 1
            return _json({"access_token": self.issued_token, "expires_in": 3600, "token_type": "Bearer"})
        if method not in ("GET", "HEAD"):
            return _error("s3", 405, "MethodNotAllowed", f"{method} is not served here")
        if self.auth is not None:
            refused = self._refuse(headers.get("authorization", ""))
            if refused is not None:
                return refused
        if path.startswith(("/storage/v1/b/", "/download/storage/v1/b/")):
            return self._gcs(method, path.removeprefix("/download"), query, headers)
        bucket_name, _, key = path.lstrip("/").partition("/")
        with self._lock:
            bucket = self.buckets.get(bucket_name)
        if bucket is None:
            return _error("s3", 404, "NoSuchBucket", f"no bucket {bucket_name!r}")
        if not key:
            self.stats["list"] += 1
            return self._s3_list(bucket_name, bucket, query)
        self.stats["head" if method == "HEAD" else "get"] += 1
        obj = bucket.objects.get(key)
        if obj is None:
            return _error("s3", 404, "NoSuchKey", f"no object {key!r}")
        return _object(obj, headers, method == "HEAD", s3=True)

    @property
    def token(self) -> str | None:
        """The bearer token ``auth`` accepts, if any."""
        for scheme in (self.auth or "").split(","):
            if scheme.startswith("bearer:"):
                return scheme.removeprefix("bearer:")
        return None

    def _refuse(self, authorization: str) -> tuple[int, list[tuple[str, str]], bytes] | None:
        schemes = (self.auth or "").split(",")
        signed = authorization.startswith("AWS4-HMAC-SHA256 Credential=")
        if signed and "s3" in schemes:
            return None
        if self.token is not None and authorization == "Bearer " + self.token:
            return None
        self.stats["refused"] += 1
        if signed or (not authorization and "s3" in schemes):  # answered as S3 would
            return _error("s3", 403, "AccessDenied", "access denied")
        return _error("gcs", 401, "", "no valid bearer token")

    def _s3_list(self, name: str, bucket: _Bucket, q: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        if q.get("list-type") != "2":
            return _error("s3", 400, "InvalidRequest", "only ListObjectsV2 is served")
        prefix = q.get("prefix", "")
        try:
            limit = min(1000, int(q.get("max-keys", "1000")))
        except ValueError:
            return _error("s3", 400, "InvalidArgument", "max-keys is not a number")
        token = q.get("continuation-token")
        after = base64.urlsafe_b64decode(token).decode() if token else q.get("start-after")
        with self._lock:
            keys, more = bucket.after(prefix, after, limit)
            objs = [bucket.objects[k] for k in keys]
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
            f"<Name>{escape(name)}</Name><Prefix>{escape(prefix)}</Prefix>",
            f"<KeyCount>{len(keys)}</KeyCount><MaxKeys>{limit}</MaxKeys>",
            f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>",
        ]
        if token:
            parts.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
        if more:
            parts.append(
                f"<NextContinuationToken>{base64.urlsafe_b64encode(keys[-1].encode()).decode()}</NextContinuationToken>"
            )
        for k, o in zip(keys, objs, strict=True):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(o.modified))
            parts.append(
                f"<Contents><Key>{escape(k)}</Key><LastModified>{stamp}</LastModified>"
                f"<ETag>{escape(o.etag)}</ETag><Size>{len(o.data)}</Size>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
        parts.append("</ListBucketResult>")
        return 200, [("Content-Type", "application/xml")], "".join(parts).encode()

    def _gcs(
        self, method: str, path: str, q: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        # /storage/v1/b/BUCKET[/o[/NAME]]
        rest = path.removeprefix("/storage/v1/b/")
        bucket_name, _, rest = rest.partition("/")
        with self._lock:
            bucket = self.buckets.get(bucket_name)
        if bucket is None:
            return _error("gcs", 404, "", f"no bucket {bucket_name!r}")
        if not rest:
            return _json({"kind": "storage#bucket", "name": bucket_name, "id": bucket_name})
        if rest == "o":
            self.stats["list"] += 1
            return self._gcs_list(bucket, q)
        name = rest.removeprefix("o/")
        self.stats["head" if method == "HEAD" else "get"] += 1
        obj = bucket.objects.get(name)
        if obj is None:
            return _error("gcs", 404, "", f"no object {name!r}")
        if q.get("alt") == "media":
            return _object(obj, headers, method == "HEAD", s3=False)
        return _json(_gcs_meta(bucket_name, name, obj))

    def _gcs_list(self, bucket: _Bucket, q: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        prefix = q.get("prefix", "")
        try:
            limit = min(1000, int(q.get("maxResults", "1000")))
        except ValueError:
            return _error("gcs", 400, "", "maxResults is not a number")
        token = q.get("pageToken")
        offset = q.get("startOffset")
        with self._lock:
            if token:
                keys, more = bucket.after(prefix, base64.urlsafe_b64decode(token).decode(), limit)
            else:
                # startOffset is inclusive: start just before it.
                lo = bisect.bisect_left(bucket.keys, offset) if offset else 0
                keys, more = bucket.after(prefix, bucket.keys[lo - 1] if offset and lo else None, limit)
                keys = [k for k in keys if not offset or k >= offset]
            items = [_gcs_meta("", k, bucket.objects[k]) for k in keys]
        body: dict[str, object] = {"kind": "storage#objects", "items": items}
        if more:
            body["nextPageToken"] = base64.urlsafe_b64encode(keys[-1].encode()).decode()
        return _json(body)


def _gcs_meta(bucket: str, name: str, obj: _Object) -> dict[str, object]:
    return {
        "kind": "storage#object",
        "bucket": bucket,
        "name": name,
        "size": str(len(obj.data)),
        "md5Hash": obj.md5_b64,
        "generation": "1",
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(obj.modified)),
    }


def _json(body: object, status: int = 200) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("Content-Type", "application/json")], json.dumps(body).encode()


def _error(api: str, status: int, code: str, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    if api == "gcs":
        return _json({"error": {"code": status, "message": message, "errors": [{"message": message}]}}, status)
    code = code or _S3_CODES.get(status, "InternalError")
    body = (
        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
    )
    return status, [("Content-Type", "application/xml")], body.encode()


def _object(obj: _Object, headers: dict[str, str], head: bool, s3: bool) -> tuple[int, list[tuple[str, str]], bytes]:
    size = len(obj.data)
    meta = [
        ("Content-Type", "application/octet-stream"),
        ("Last-Modified", obj.http_date),
        ("ETag", obj.etag),
        ("Accept-Ranges", "bytes"),
    ]
    if not s3:
        meta += [
            ("x-goog-generation", "1"),
            ("x-goog-hash", "md5=" + obj.md5_b64),
            ("x-goog-stored-content-length", str(size)),
        ]
    if headers.get("if-none-match") == obj.etag:
        return 304, meta, b""
    spec = headers.get("range")
    if spec is None:
        return 200, meta, _HeadBody(size) if head else obj.data
    bounds = _range(spec, size)
    if bounds is None:
        return 416, [("Content-Range", f"bytes */{size}")], b""
    a, b = bounds
    meta.append(("Content-Range", f"bytes {a}-{b}/{size}"))
    return 206, meta, _HeadBody(b - a + 1) if head else obj.data[a : b + 1]


class _HeadBody(bytes):
    """No body, but the length a GET would send (HEAD's Content-Length)."""

    def __new__(cls, length: int) -> _HeadBody:
        self = super().__new__(cls, b"")
        self.length = length  # type: ignore[attr-defined]
        return self


def _range(spec: str, size: int) -> tuple[int, int] | None:
    """(first, last) of a single "bytes=" range within ``size``, else None."""
    unit, _, r = spec.partition("=")
    if unit.strip() != "bytes" or "," in r:
        return None
    a, _, b = r.strip().partition("-")
    try:
        if not a:
            n = int(b)
            return (max(0, size - n), size - 1) if n > 0 and size else None
        first = int(a)
        last = int(b) if b else size - 1
    except ValueError:
        return None
    if first >= size or last < first:
        return None
    return first, min(last, size - 1)


class _Connection(asyncio.Protocol):
    """One client connection: requests one at a time (clients here do not pipeline)."""

    def __init__(self, server: ObjectServer) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.pending: asyncio.TimerHandle | None = None
        self.busy = False  # a request is being answered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.open_connections += 1
        self.server._connections.add(self)
        self.server.stats["connections"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open_connections -= 1
        self.server._connections.discard(self)
        if self.busy:
            self.server.stats["aborted"] += 1
            self._done()
        if self.pending is not None:
            self.pending.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > _MAX_HEAD and self.transport is not None:
                self.transport.abort()
            return
        head, rest = self.buf[:end].decode("latin-1"), self.buf[end + 4 :]
        lines = head.split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            if self.transport is not None:
                self.transport.abort()
            return
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if len(rest) < length:
            return  # the body is still coming
        self.buf = rest[length:]
        self.busy = True
        s = self.server
        s.inflight += 1
        s.stats["requests"] += 1
        s.stats["max_inflight"] = max(s.stats["max_inflight"], s.inflight)
        key = unquote(urlsplit(target).path).lstrip("/").partition("/")[2] or None
        fault = s._decide(key)
        if fault == "hang":
            return  # never answered: the client's timeout ends it
        delay = s.delay
        if delay > 0:
            loop = asyncio.get_running_loop()
            self.pending = loop.call_later(delay, self._respond, method, target, headers, fault)
        else:
            self._respond(method, target, headers, fault)

    def _done(self) -> None:
        self.busy = False
        self.server.inflight -= 1

    def _respond(self, method: str, target: str, headers: dict[str, str], fault: str | int | None) -> None:
        self.pending = None
        t = self.transport
        if t is None or t.is_closing():
            return
        s = self.server
        if fault == "reset":
            s.stats["reset"] += 1
            self._done()
            t.abort()
            return
        if isinstance(fault, int):
            status, extra, body = _error("s3", fault, "", "injected fault")
        else:
            status, extra, body = s.answer(method, target, headers)
        s.stats[f"status_{status}"] += 1
        length = getattr(body, "length", len(body))
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", f"Content-Length: {length}"]
        lines += [f"{k}: {v}" for k, v in extra]
        if headers.get("connection", "").lower() == "close":
            lines.append("Connection: close")
        out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if fault == "truncate" and status in (200, 206) and method == "GET" and len(body) > 1:
            s.stats["truncated"] += 1
            self._done()
            t.write(out + body[: len(body) // 2])
            t.abort()
            return
        t.write(out + (b"" if method == "HEAD" else body))
        self._done()
        if headers.get("connection", "").lower() == "close":
            t.close()
        elif self.buf:
            self._next()


def quote_key(key: str) -> str:
    """A key as a GCS JSON-API object name in a path (slashes escaped)."""
    return quote(key, safe="")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.support.objectserver", description=__doc__.split("\n\n")[0])
    p.add_argument("--bucket", required=True)
    p.add_argument("--folder", required=True, help="files to serve as the bucket's objects")
    p.add_argument("--prefix", default="")
    p.add_argument("--delay", type=float, default=0.0, help="seconds added before every answer")
    p.add_argument("--auth", default=None, help='what is accepted, comma-separated: "s3", "bearer:TOKEN"')
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--stats", action="store_true", help="on exit, print the counts and the CPU used as one JSON line")
    args = p.parse_args(argv)
    server = ObjectServer(delay=args.delay, auth=args.auth)
    server.load_folder(args.bucket, args.folder, args.prefix)

    async def run() -> None:
        await server.serve(args.port)
        print(server.port, flush=True)
        # Serve until stdin closes (the parent ended or closed the pipe).
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.close()

    asyncio.run(run())
    if args.stats:  # read by benchmarks: what was asked and answered, and this process's CPU (all threads)
        print(json.dumps({**server.stats, "cpu_s": time.process_time()}), flush=True)


if __name__ == "__main__":
    main()
