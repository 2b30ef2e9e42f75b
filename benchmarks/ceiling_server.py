"""The transport ceiling: a bare grpc.aio server streaming pre-built RawLedger
frames of a lake's ledgers from memory, with no lake, cache or checks between
the request and the socket. Binds a port the kernel picks on 127.0.0.1 and
prints ``READY <port>`` once serving.

    python benchmarks/ceiling_server.py LAKE_FOLDER
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc

from stellar_live_source import api
from stellar_live_source.core.decode import decode_object
from stellar_live_source.core.frame import raw_ledger_frame
from stellar_live_source.ops.config import defaults


def load_frames(lake: Path) -> dict[int, bytes]:
    """Every ledger of the lake as finished RawLedger wire bytes, by sequence."""
    frames: dict[int, bytes] = {}
    max_size = defaults().storage.max_object_bytes  # the service's cap: MAX_OBJECT_BYTES
    for path in lake.rglob("*.xdr.zst*"):
        d = decode_object(path.read_bytes(), max_size=max_size)
        for led in d.ledgers:
            frames[led.seq] = raw_ledger_frame(led.seq, d.data, led.offset, led.length)
    return frames


async def serve(frames: dict[int, bytes]) -> None:
    async def stream(request, context):
        for seq in range(request.start_ledger, request.end_ledger + 1):
            frame = frames.get(seq)
            if frame is None:
                await context.abort(grpc.StatusCode.OUT_OF_RANGE, f"ledger {seq} is not loaded")
            yield frame

    server = grpc.aio.server(options=[("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                api.SERVICE,
                {
                    "StreamRawLedgers": grpc.unary_stream_rpc_method_handler(
                        stream, request_deserializer=api.StreamLedgersRequest.FromString
                    ),  # no serializer: frames are bytes
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    if port == 0:
        raise SystemExit("cannot bind a port on 127.0.0.1")
    await server.start()
    print(f"READY {port}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    asyncio.run(serve(load_frames(Path(sys.argv[1]))))


if __name__ == "__main__":
    main()
