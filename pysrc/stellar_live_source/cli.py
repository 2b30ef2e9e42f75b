"""The ``stellar-live-source`` command: the service and its admin processes.

``serve`` runs the gRPC service; ``stream`` is a client; ``latest``/``oldest``
ask the lake; ``config validate`` checks a configuration; ``inspect`` reads
ledgers with the compiled core (never stellar-sdk's decoder); ``pack`` writes
lakes for tests, benchmarks and the embedded sample.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path

from . import __version__
from .core import BACKEND
from .core.decode import FORMATS, UNKNOWN_ARMS, decode_file
from .core.errors import CoreError
from .core.keys import EXTENSIONS, Layout

SAMPLE_LAKE = Path(__file__).with_name("sample_lake")


def _size(text: str) -> int:
    units = {
        "": 1,
        "k": 10**3,
        "kb": 10**3,
        "kib": 2**10,
        "m": 10**6,
        "mb": 10**6,
        "mib": 2**20,
        "g": 10**9,
        "gb": 10**9,
        "gib": 2**30,
    }
    t = text.strip().lower()
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    try:
        return int(float(num) * units[t[len(num) :].strip()])
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (bytes, or with a unit such as 512MiB)") from None


def _objects(path: Path) -> Iterator[Path]:
    """A file, or every datalake object under a folder in ledger order."""
    if not path.is_dir():
        yield path
        return
    found = [p for p in path.rglob("*") if p.is_file() and p.name.endswith(EXTENSIONS)]
    # Hex prefixes are inverted (newest first): sort by the decimal start instead.
    yield from sorted(found, key=lambda p: int(p.name.split("--", 1)[1].split(".", 1)[0].split("-")[0]))


def cmd_inspect(args: argparse.Namespace) -> int:
    paths = args.paths or [str(SAMPLE_LAKE)]
    for given in paths:
        root = Path(given)
        if not root.exists():
            print(f"stellar-live-source: {given}: no such file or folder", file=sys.stderr)
            return 2
        for path in _objects(root):
            shown = given if path == root else str(path)
            try:
                decoded = decode_file(
                    path.read_bytes(), args.format, max_size=args.max_size, unknown_arms=args.unknown_arms
                )
            except CoreError as exc:
                print(f"stellar-live-source: {shown}: {exc}", file=sys.stderr)
                return 1
            for i, led in enumerate(decoded.ledgers):
                digest = sha256(decoded.xdr(i)).hexdigest()
                if args.json:
                    print(
                        json.dumps(
                            {
                                "file": shown,
                                "index": i,
                                "seq": led.seq,
                                "lcm_v": led.lcm_v,
                                "protocol": led.protocol,
                                "xdr_len": led.length,
                                "sha256": digest,
                                "hash": led.hash.hex(),
                                "prev": led.prev.hex(),
                                "hash_ok": led.hash_ok,
                                "fallback": led.fallback,
                            }
                        )
                    )
                else:
                    flags = ("hash ok" if led.hash_ok else "HASH MISMATCH") + (" fallback" if led.fallback else "")
                    print(
                        f"{shown} #{i} ledger {led.seq} v{led.lcm_v} protocol {led.protocol} "
                        f"{led.length} bytes sha256 {digest[:16]} hash {led.hash.hex()[:16]} {flags}"
                    )
    return 0


def _config(args: argparse.Namespace):
    """The configuration (CONFIG_FILE or --config, then the environment), or exit 2 listing every problem."""
    from .ops.config import ConfigError, load

    try:
        config = load(config_file=args.config)
    except ConfigError as exc:
        print(f"stellar-live-source: invalid configuration:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if config.storage.uses_sample_lake:
        # No lake configured at all: serve the sample lake the package ships.
        config = dataclasses.replace(config, storage=dataclasses.replace(config.storage, bucket_name=str(SAMPLE_LAKE)))
    return config


def _logging(level: str) -> None:
    import logging

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_serve(args: argparse.Namespace) -> int:
    from .ops.runtime import tune_malloc
    from .server.app import App

    tune_malloc()
    config = _config(args)
    _logging(config.monitoring.log_level)
    try:
        asyncio.run(App(config).run())
    except Exception as exc:  # start-up failures: one clear line, non-zero exit
        from .lake.lake import LakeError, Unavailable
        from .lake.storage import StorageConfigError, StorageError

        if isinstance(exc, (LakeError, StorageConfigError, StorageError, Unavailable, OSError)):
            print(f"stellar-live-source serve: {exc}", file=sys.stderr)
            return 1
        raise
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from .ops.config import main_validate

    return main_validate(config_file=args.config)


async def _lake_end(args: argparse.Namespace, which: str) -> int | None:
    from .lake.lake import Lake
    from .server.app import configured_storage, lake_settings

    config = _config(args)
    lake = await Lake.open(configured_storage(config), lake_settings(config))
    try:
        return await (lake.newest() if which == "latest" else lake.oldest())
    finally:
        await lake.close()


def cmd_lake_end(args: argparse.Namespace) -> int:
    seq = asyncio.run(_lake_end(args, args.command))
    if seq is None:
        print("stellar-live-source: the lake holds no ledgers", file=sys.stderr)
        return 1
    print(seq)
    return 0


async def _stream(args: argparse.Namespace) -> int:
    from .client import Client

    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    async with Client(args.server) as client:
        async for seq, xdr in client.stream(args.start, args.end):
            if out:
                (out / f"{seq}.xdr").write_bytes(xdr)
            else:
                print(f"{seq} {len(xdr)} {decode_hash(xdr)}", flush=True)
    return 0


def decode_hash(xdr: bytes) -> str:
    """The ledger's header hash, read by the compiled indexer."""
    from .core.index import index_ledgers

    return index_ledgers(xdr, [(0, len(xdr), False)])[0][3].hex()


def cmd_stream(args: argparse.Namespace) -> int:
    import grpc

    try:
        return asyncio.run(_stream(args))
    except grpc.aio.AioRpcError as exc:
        print(f"stellar-live-source stream: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def cmd_pack(args: argparse.Namespace) -> int:
    from .tools import pack

    if args.synthetic is not None:
        from .tools.synthetic import synthetic_ledgers

        if args.inputs:
            raise SystemExit("stellar-live-source pack: give input files or --synthetic, not both")
        ledgers = synthetic_ledgers(
            args.synthetic, args.start, seed=args.seed, sizes=args.sizes, network_passphrase=args.network_passphrase
        )
    else:
        if not args.inputs:
            raise SystemExit("stellar-live-source pack: give input files, or --synthetic N")
        ledgers = pack.ledgers_of(args.inputs)
        if args.renumber is not None:
            if args.count is None:
                raise SystemExit("stellar-live-source pack: --renumber needs --count")
            ledgers = pack.renumber(ledgers, args.renumber, args.count)
    try:
        keys = pack.write_lake(
            args.out,
            ledgers,
            ledgers_per_file=args.ledgers_per_file,
            files_per_partition=args.files_per_partition,
            extension=args.extension,
            network_passphrase=args.network_passphrase,
        )
    except (CoreError, ValueError) as exc:
        print(f"stellar-live-source pack: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(keys)} objects to {args.out}", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="stellar-live-source", description="Stellar ledgers out of a datalake.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__} (core: {BACKEND})")
    sub = ap.add_subparsers(dest="command", required=True)
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config", metavar="FILE", help="YAML configuration (default: $CONFIG_FILE); environment variables override it"
    )

    p = sub.add_parser("serve", parents=[config], help="run the gRPC service (default: the embedded sample lake)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("config", help="configuration commands")
    csub = p.add_subparsers(dest="config_command", required=True)
    v = csub.add_parser("validate", parents=[config], help="check a configuration without starting anything")
    v.set_defaults(func=cmd_config)

    for name, what in (("latest", "newest"), ("oldest", "oldest")):
        p = sub.add_parser(name, parents=[config], help=f"print the lake's {what} ledger")
        p.set_defaults(func=cmd_lake_end)

    p = sub.add_parser("stream", help="stream ledgers from a server; resumes by itself after UNAVAILABLE")
    p.add_argument("--server", default="localhost:50052", help="host:port of the service")
    p.add_argument("--from", dest="start", type=int, required=True, metavar="N", help="first ledger")
    p.add_argument("--to", dest="end", type=int, default=0, metavar="M", help="last ledger (default: follow the tip)")
    p.add_argument("--out", metavar="DIR", help="write each ledger's XDR to DIR/SEQ.xdr instead of printing")
    p.set_defaults(func=cmd_stream)

    p = sub.add_parser("inspect", help="print one line per ledger of datalake objects, raw ledgers or XDR streams")
    p.add_argument("paths", nargs="*", help="files or lake folders (default: the embedded sample lake)")
    p.add_argument("--json", action="store_true", help="one JSON object per ledger")
    p.add_argument("--format", choices=FORMATS, help="force a framing instead of detecting it")
    p.add_argument(
        "--unknown-arms",
        choices=UNKNOWN_ARMS,
        default="error",
        help="hash-chain: delimit ledgers with union arms newer than this build by the hash chain",
    )
    p.add_argument("--max-size", type=_size, default="512MiB", help="cap on one file's decompressed size")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("pack", help="write ledgers into a datalake folder")
    p.add_argument("out", help="the lake folder to write")
    p.add_argument("inputs", nargs="*", help="files of ledgers in any framing inspect reads")
    p.add_argument("--ledgers-per-file", type=int, default=64)
    p.add_argument("--files-per-partition", type=int, default=10)
    p.add_argument("--extension", choices=EXTENSIONS, default=".xdr.zst")
    p.add_argument("--network-passphrase", default="Standalone Network ; February 2017")
    p.add_argument("--renumber", type=int, metavar="START", help="cycle the inputs into a run from START")
    p.add_argument("--count", type=int, metavar="N", help="how many ledgers --renumber writes")
    p.add_argument("--synthetic", type=int, metavar="N", help="generate N ledgers (needs the [sdk] extra)")
    p.add_argument("--start", type=int, default=2, help="first sequence of --synthetic")
    p.add_argument("--seed", type=int, default=0, help="seed of --synthetic")
    p.add_argument("--sizes", choices=("mix", "small", "large"), default="mix", help="size mix of --synthetic")
    p.set_defaults(func=cmd_pack)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "ledgers_per_file", None) is not None:
        try:
            Layout(args.ledgers_per_file, args.files_per_partition, args.extension)
        except ValueError as exc:
            parser().error(str(exc))
    try:
        return args.func(args)
    except BrokenPipeError:  # `inspect ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
