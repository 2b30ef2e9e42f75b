"""The transport ceiling: a bare grpc.aio server streaming pre-built RawLedger
frames of a lake's ledgers from memory, with no lake, cache or checks between
the request and the socket. Prints READY once serving.

    python benchmarks/ceiling_server.py PORT LAKE_FOLDER
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc

from stellar_live_source import api
from stellar_live_source.core.decode import decode_object
from stellar_live_source.core.frame import raw_ledger_frame


def load_frames(lake: Path) -> dict[int, bytes]:
    """Every ledger of the lake as finished RawLedger wire bytes, by sequence."""
    frames: dict[int, bytes] = {}
    for path in lake.rglob("*.xdr.zst*"):
        d = decode_object(path.read_bytes())
        for led in d.ledgers:
            frames[led.seq] = raw_ledger_frame(led.seq, d.data, led.offset, led.length)
    return frames


async def serve(port: int, frames: dict[int, bytes]) -> None:
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
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise SystemExit(f"cannot bind 127.0.0.1:{port}")
    await server.start()
    print("READY", flush=True)
    await server.wait_for_termination()


def main() -> None:
    port, lake = int(sys.argv[1]), Path(sys.argv[2])
    asyncio.run(serve(port, load_frames(lake)))


if __name__ == "__main__":
    main()
