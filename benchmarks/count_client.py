"""The fixed client of the service benchmarks: plain synchronous grpcio,
counting messages and raw bytes, decoding nothing. Run it as a subprocess so
it has its own core and GIL; it prints one JSON line.

    python benchmarks/count_client.py ADDR START END [--streams K] [--at UNIX_TIME] [--mark N] [--v1]

With ``--streams K`` it runs K streams at once, one channel (one connection)
each, in threads; ``--at`` starts them at a wall-clock time, so several
client processes start together. ``--mark N`` (one stream) also prints a
JSON line the moment the N-th ledger arrives, so a warm-up can be cut off:
the final line then gives the ledgers, bytes and seconds after the mark, and
the client's own CPU seconds in both lines. ``--v1`` streams from
``stellar.v1.RawLedgerService`` instead (its streams have no end: the client
cancels once it has ``END - START + 1`` ledgers).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

import grpc

from stellar_live_source import api

OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.use_local_subchannel_pool", 1)]


def open_stream(addr: str, start: int, end: int, v1: bool = False):
    """(channel, a call factory): connected before the clock starts."""
    channel = grpc.insecure_channel(addr, options=OPTIONS)
    grpc.channel_ready_future(channel).result(timeout=30)
    if v1:
        request = api.message("stellar.v1.StreamLedgersRequest")(start_ledger=start)
        method = f"/{api.V1_SERVICE}/StreamRawLedgers"
    else:
        request = api.StreamLedgersRequest(start_ledger=start, end_ledger=end)
        method = api.STREAM_METHOD
    call: grpc.UnaryStreamMultiCallable[Any, bytes] = channel.unary_stream(
        method, request_serializer=type(request).SerializeToString, response_deserializer=None
    )  # raw bytes: nothing decoded
    return channel, lambda: _upto(call(request, timeout=600), end - start + 1)


def _upto(call: Any, n: int) -> Any:
    """The call's messages, ``n`` at most (then the call is cancelled)."""
    got = 0
    for msg in call:
        yield msg
        got += 1
        if got == n:
            call.cancel()
            return


def count(addr: str, start: int, end: int, streams: int = 1, at: float | None = None, v1: bool = False) -> dict:
    opened = [open_stream(addr, start, end, v1) for _ in range(streams)]
    results: list[tuple[int, int, float, float]] = []

    def one(make) -> None:
        n = b = 0
        t0 = last = time.perf_counter()
        for msg in make():
            n += 1
            b += len(msg)
        last = time.perf_counter()
        results.append((n, b, t0, last))

    if at is not None:
        time.sleep(max(0.0, at - time.time()))
    threads = [threading.Thread(target=one, args=(make,)) for _, make in opened]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for channel, _ in opened:
        channel.close()
    if len(results) != streams:
        raise SystemExit("a stream failed")
    return {
        "ledgers": sum(r[0] for r in results),
        "bytes": sum(r[1] for r in results),
        "seconds": max(r[3] for r in results) - min(r[2] for r in results),
        "min_stream_ledgers": min(r[0] for r in results),
    }


def count_after_mark(addr: str, start: int, end: int, mark: int) -> dict:
    channel, make = open_stream(addr, start, end)
    n = b = 0
    t_mark = None
    for msg in make():
        n += 1
        if t_mark is not None:
            b += len(msg)
        elif n == mark:
            t_mark = time.perf_counter()
            print(json.dumps({"mark": n, "cpu": time.process_time()}), flush=True)
    last = time.perf_counter()
    channel.close()
    if t_mark is None:
        raise SystemExit(f"the stream ended after {n} ledgers, before the mark")
    return {"ledgers": n - mark, "bytes": b, "seconds": last - t_mark, "cpu": time.process_time()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("addr")
    p.add_argument("start", type=int)
    p.add_argument("end", type=int)
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--at", type=float)
    p.add_argument("--mark", type=int)
    p.add_argument("--v1", action="store_true", help="stream from stellar.v1.RawLedgerService")
    a = p.parse_args()
    if a.mark:
        print(json.dumps(count_after_mark(a.addr, a.start, a.end, a.mark)), flush=True)
    else:
        print(json.dumps(count(a.addr, a.start, a.end, a.streams, a.at, a.v1)), flush=True)


if __name__ == "__main__":
    main()
