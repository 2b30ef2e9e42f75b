"""The ``stellar-live-source`` command: the service and its admin processes.

``serve`` runs the gRPC service; ``stream`` is a client; ``latest``/``oldest``
ask the lake; ``config validate`` checks a configuration; ``inspect`` reads
ledgers with the compiled core (never stellar-sdk's decoder); ``pack`` writes
lakes for tests, benchmarks and the embedded sample.

Every command ends with an exit code of the error model (``errors.OUTCOMES``):
0 ok; 1 bad data, not found, out of range, a bad input file; 2 usage or
misconfiguration; 3 unavailable after retries; 130 on Ctrl-C; and a short
message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path
from typing import NoReturn

from . import __version__
from .core import BACKEND
from .core.decode import FORMATS, UNKNOWN_ARMS, decode_file
from .core.keys import EXTENSIONS, Layout
from .errors import (
    EXIT_INTERRUPTED,
    BadInputFile,
    ConfigError,
    CoreError,
    EmptyLake,
    LiveSourceError,
    UsageError,
    exit_code_for_status,
    outcome,
)
from .ops.config import Config, defaults, describe, load, parse_size
from .parts import SAMPLE_LAKE

PROG = "stellar-live-source"


def _say(command: str, message: str) -> None:
    print(f"{PROG} {command}: {message}", file=sys.stderr, flush=True)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: not a count (0 or more)")
    return n


def _objects(path: Path) -> Iterator[Path]:
    """A file, or every datalake object under a folder in ledger order."""
    if not path.is_dir():
        yield path
        return
    found = [p for p in path.rglob("*") if p.is_file() and p.name.endswith(EXTENSIONS)]
    # Hex prefixes are inverted (newest first): sort by the decimal start instead.
    yield from sorted(found, key=lambda p: int(p.name.split("--", 1)[1].split(".", 1)[0].split("-")[0]))


def cmd_inspect(args: argparse.Namespace) -> int:
    for given in args.paths or [str(SAMPLE_LAKE)]:
        root = Path(given)
        if not root.exists():
            raise BadInputFile(f"{given}: no such file or folder")
        for path in _objects(root):
            shown = given if path == root else str(path)
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise BadInputFile(f"{shown}: {exc.strerror}") from None
            try:
                decoded = decode_file(raw, args.format, max_size=args.max_size, unknown_arms=args.unknown_arms)
            except CoreError as exc:
                _say("inspect", f"{shown}: {exc}")
                return outcome(exc).exit_code
            for i, led in enumerate(decoded.ledgers):
                digest = sha256(decoded.xdr(i)).hexdigest()
                if args.json:
                    row = {
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
                    print(json.dumps(row))
                else:
                    flags = ("hash ok" if led.hash_ok else "HASH MISMATCH") + (" fallback" if led.fallback else "")
                    print(
                        f"{shown} #{i} ledger {led.seq} v{led.lcm_v} protocol {led.protocol} "
                        f"{led.length} bytes sha256 {digest[:16]} hash {led.hash.hex()[:16]} {flags}"
                    )
    return 0


def _config(args: argparse.Namespace) -> Config:
    """The configuration: CONFIG_FILE or --config, then the environment (ConfigError lists every problem)."""
    return load(config_file=args.config)


def _logging(level: str, fmt: str) -> None:
    """``serve``'s logs: LOG_FORMAT (json lines, or text) on stdout at LOG_LEVEL (ops.logs)."""
    from .ops import logs

    logs.setup(level, fmt)


def cmd_serve(args: argparse.Namespace) -> int:
    from . import parts
    from .ops.runtime import tune_malloc
    from .server.app import App

    tune_malloc()
    config = _config(args)
    _logging(config.monitoring.log_level, config.monitoring.log_format)
    asyncio.run(App(parts.build(config)).run(args.ports_file, config_file=args.config))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    print("\n".join(describe(_config(args))))
    return 0


def cmd_lake_end(args: argparse.Namespace) -> int:
    from .parts import open_lake

    async def end() -> int | None:
        async with open_lake(_config(args)) as lake:
            return await (lake.newest() if args.command == "latest" else lake.oldest())

    seq = asyncio.run(end())
    if seq is None:
        raise EmptyLake("the lake holds no ledgers")
    print(seq)
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    import grpc

    from .client import Client

    out = Path(args.out) if args.out else None
    if out:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInputFile(f"--out {args.out}: {exc.strerror}") from None

    def retrying(exc: grpc.aio.AioRpcError, attempt: int, wait: float) -> None:
        _say("stream", f"{exc.code().name}: {exc.details()}; retry {attempt} of {args.max_retries} in {wait:.1f}s")

    if bool(args.cert) != bool(args.key):
        raise BadInputFile("--cert and --key go together (the client's certificate and its key)")
    api_key = _api_key(args.api_key_file)

    async def run() -> None:
        async with Client(
            args.server,
            tls=args.tls,
            tls_ca=args.ca,
            tls_cert=args.cert,
            tls_key=args.key,
            api_key=api_key,
            max_retries=args.max_retries,
            on_retry=retrying,
        ) as client:
            async for seq, xdr in client.stream(args.start, args.end):
                if out:
                    (out / f"{seq}.xdr").write_bytes(xdr)
                else:
                    print(f"{seq} {len(xdr)} {decode_hash(xdr)}", flush=True)

    try:
        asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        _say("stream", f"{exc.code().name}: {exc.details()}")
        return exit_code_for_status(exc.code().name)
    return 0


#: Where ``stream`` finds the API key when ``--api-key-file`` is not given (never a flag's value).
API_KEY_ENV = "STELLAR_LIVE_SOURCE_API_KEY"


def _api_key(path: str | None) -> str | None:
    """The API key from ``--api-key-file`` (its first non-empty line), else the
    environment; None when neither. The key itself is never printed."""
    if path:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInputFile(f"--api-key-file {path}: {getattr(exc, 'strerror', None) or 'not text'}") from None
        key = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if not key:
            raise BadInputFile(f"--api-key-file {path}: holds no key")
        return key
    return os.environ.get(API_KEY_ENV, "").strip() or None


def decode_hash(xdr: bytes) -> str:
    """The ledger's header hash, read by the compiled indexer."""
    from .core.index import index_ledgers

    return index_ledgers(xdr, [(0, len(xdr), False)])[0][3].hex()


def cmd_pack(args: argparse.Namespace) -> int:
    from .tools import pack

    if args.synthetic is not None:
        from .tools.synthetic import synthetic_ledgers

        if args.inputs:
            raise UsageError("give input files or --synthetic, not both")
        ledgers = synthetic_ledgers(
            args.synthetic, args.start, seed=args.seed, sizes=args.sizes, network_passphrase=args.network_passphrase
        )
    else:
        if not args.inputs:
            raise UsageError("give input files, or --synthetic N")
        for given in args.inputs:
            if not Path(given).is_file():
                raise BadInputFile(f"{given}: no such file")
        ledgers = pack.ledgers_of(args.inputs, max_size=defaults().storage.max_object_bytes)
        if args.renumber is not None:
            if args.count is None:
                raise UsageError("--renumber needs --count")
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
    except LiveSourceError:
        raise
    except ValueError as exc:  # a gap between inputs, a renumber without inputs
        raise UsageError(str(exc)) from None
    print(f"wrote {len(keys)} objects to {args.out}", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    d = defaults()
    ap = argparse.ArgumentParser(prog=PROG, description="Stellar ledgers out of a datalake.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__} (core: {BACKEND})")
    sub = ap.add_subparsers(dest="command", required=True)
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config", metavar="FILE", help="YAML configuration (default: $CONFIG_FILE); environment variables override it"
    )

    p = sub.add_parser("serve", parents=[config], help="run the gRPC service (default: the embedded sample lake)")
    p.add_argument("--ports-file", metavar="FILE", help="write the ports bound as JSON (useful with port 0)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("config", help="configuration commands")
    csub = p.add_subparsers(dest="config_command", required=True)
    v = csub.add_parser("validate", parents=[config], help="check a configuration and print every setting")
    v.set_defaults(func=cmd_config)

    for name, what in (("latest", "newest"), ("oldest", "oldest")):
        p = sub.add_parser(name, parents=[config], help=f"print the lake's {what} ledger")
        p.set_defaults(func=cmd_lake_end)

    # No abbreviations: "--api-key SECRET" must not be taken for --api-key-file (and the key printed as a path).
    p = sub.add_parser(
        "stream", allow_abbrev=False, help="stream ledgers from a server; resumes by itself after UNAVAILABLE"
    )
    p.add_argument("--server", default="localhost:50052", help="host:port of the service")
    p.add_argument("--from", dest="start", type=int, required=True, metavar="N", help="first ledger")
    p.add_argument("--to", dest="end", type=int, default=0, metavar="M", help="last ledger (default: follow the tip)")
    p.add_argument("--out", metavar="DIR", help="write each ledger's XDR to DIR/SEQ.xdr instead of printing")
    p.add_argument(
        "--max-retries",
        type=_count,
        default=5,
        metavar="N",
        help="give up (exit 3) after N retries in a row without a new ledger (default: 5)",
    )
    p.add_argument("--tls", action="store_true", help="connect with TLS, trusting the system's CAs (implied by --ca)")
    p.add_argument("--ca", metavar="FILE", help="TLS: the CA certificate (PEM) that signed the server's certificate")
    p.add_argument("--cert", metavar="FILE", help="mutual TLS: this client's certificate (PEM); needs --key")
    p.add_argument("--key", metavar="FILE", help="mutual TLS: this client's private key (PEM); needs --cert")
    p.add_argument(
        "--api-key-file",
        metavar="FILE",
        help=f"read the API key from FILE (default: the {API_KEY_ENV} environment variable); "
        "sent as 'authorization: Bearer KEY'",
    )
    p.set_defaults(func=cmd_stream)

    p = sub.add_parser("inspect", help="print one line per ledger of datalake objects, raw ledgers or XDR streams")
    p.add_argument("paths", nargs="*", help="files or lake folders (default: the embedded sample lake)")
    p.add_argument("--json", action="store_true", help="one JSON object per ledger")
    p.add_argument("--format", choices=FORMATS, help="force a framing instead of detecting it")
    p.add_argument(
        "--unknown-arms",
        choices=UNKNOWN_ARMS,
        default=d.stream.xdr_unknown_arms,
        help="hash-chain: delimit ledgers with union arms newer than this build by the hash chain",
    )
    p.add_argument(
        "--max-size",
        type=_size,
        default=d.storage.max_object_bytes,
        help="cap on one file's decompressed size (default: MAX_OBJECT_BYTES's)",
    )
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("pack", help="write ledgers into a datalake folder")
    p.add_argument("out", help="the lake folder to write")
    p.add_argument("inputs", nargs="*", help="files of ledgers in any framing inspect reads")
    p.add_argument("--ledgers-per-file", type=int, default=d.storage.ledgers_per_file)
    p.add_argument("--files-per-partition", type=int, default=d.storage.files_per_partition)
    p.add_argument("--extension", choices=EXTENSIONS, default=EXTENSIONS[0])
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
    args = parser().parse_args(argv)  # a usage error exits 2 with argparse's message
    command = args.command if args.command != "config" else "config validate"
    try:
        if getattr(args, "ledgers_per_file", None) is not None:
            try:
                Layout(args.ledgers_per_file, args.files_per_partition, args.extension)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        return int(args.func(args))
    except ConfigError as exc:
        if len(exc.problems) == 1:
            _say(command, f"invalid configuration: {exc.problems[0]}")
        else:  # every problem at once, one per line
            _say(command, f"invalid configuration ({len(exc.problems)} problems):")
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
        return outcome(exc).exit_code
    except LiveSourceError as exc:
        _say(command, str(exc))
        return outcome(exc).exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `inspect ... | head`
        return 0
    except OSError as exc:  # a file a command writes, a socket: one line, not a traceback
        _say(command, f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
        return 1


def run() -> NoReturn:
    """The process entry (the ``stellar-live-source`` script, ``python -m``):
    ``main()``, then an exit without the interpreter's finalization. obstore's
    runtime threads may still be returning from handing a result to an event
    loop that has already finished; a thread that asks for the GIL while the
    interpreter finalizes is ended with pthread_exit, which aborts the process
    through Rust frames (SIGABRT, about one short command in fifty). Nothing
    is lost: logging and the standard streams are flushed first."""
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or a reader that went away
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
