"""Every command ends on the error model's exit code with a short message on
stderr, never a traceback: 0 ok; 1 bad data, not found, out of range, a bad
input file; 2 usage or misconfiguration; 3 unavailable after retries; 130 on
Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stellar_live_source.tools.pack import ledgers_of, renumber, write_lake

from .conftest import LEDGERS, needs_testdata
from .service_support import (
    MAX_OBJECT_BYTES,
    SHARED_LAKE,
    cli_process,
    env_for,
    index_by_seq,
    read_lines,
    server_process,
    wait_for_health,
)

pytestmark = needs_testdata

FIRST, LAST = 1410048, 1410367


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str, list[str]]:
    proc = cli_process(*args, env=env)
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return proc.returncode, out, err.splitlines()


def lake_env(lake: Path | str, **extra: object) -> dict[str, str]:
    return env_for(lake, RETRY_ATTEMPTS=1, RETRY_BACKOFF="10ms", **extra)


@pytest.mark.parametrize("command", ["latest", "oldest"])
def test_the_lakes_ends_and_how_a_lake_that_cannot_be_read_ends(command, tmp_path):
    assert run_cli(command, env=lake_env(SHARED_LAKE))[:2] == (0, f"{FIRST if command == 'oldest' else LAST}\n")
    # No such folder: misconfiguration, one line (the command printed 49 lines of traceback before).
    code, out, err = run_cli(command, env=lake_env(tmp_path / "nope"))
    assert (code, out, len(err)) == (2, "", 1), err
    assert err[0].startswith(f"stellar-live-source {command}: invalid configuration: ") and "nope" in err[0]
    # A lake without ledgers: not found.
    (tmp_path / "empty").mkdir()
    assert run_cli(command, env=lake_env(tmp_path / "empty"))[::2] == (
        1,
        [f"stellar-live-source {command}: the lake holds no ledgers"],
    )
    # Storage that does not answer: unavailable after the retries.
    s3 = lake_env(
        "bucket",
        STORAGE_TYPE="S3",
        S3_ENDPOINT_URL="http://127.0.0.1:1",
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="x",
        AWS_REGION="us-east-1",
        STORAGE_TIMEOUT="2s",
    )
    code, _, err = run_cli(command, env=s3)
    assert (code, len(err)) == (3, 1) and "after 2 tries" in err[0], err
    # A bad setting: misconfiguration, naming it.
    code, _, err = run_cli(command, env=lake_env(SHARED_LAKE, CACHE_BYTES="lots"))
    assert (code, len(err)) == (2, 1) and "CACHE_BYTES='lots'" in err[0], err


def test_stream_prints_ledgers_and_exits_by_status():
    index = index_by_seq()
    with server_process(env_for(SHARED_LAKE)) as srv:
        code, out, err = run_cli("stream", "--server", srv.addr, "--from", str(FIRST), "--to", str(FIRST + 4))
        assert (code, err) == (0, [])
        assert [line.split() for line in out.splitlines()] == [
            [str(s), str(index[s]["xdr_len"]), index[s]["hash"]] for s in range(FIRST, FIRST + 5)
        ]
        code, out, err = run_cli("stream", "--server", srv.addr, "--from", "1", "--to", "3")  # a bad request
        assert (code, out, len(err)) == (2, "", 1) and "INVALID_ARGUMENT" in err[0] and "start_ledger" in err[0]
        code, _, err = run_cli("stream", "--server", srv.addr, "--from", "100")  # below the lake
        assert (code, len(err)) == (1, 1) and "OUT_OF_RANGE" in err[0], err


def test_stream_to_a_server_that_is_not_there_retries_saying_so_then_exits_3():
    code, out, err = run_cli("stream", "--server", "127.0.0.1:1", "--from", "2", "--to", "3", "--max-retries", "2")
    assert (code, out) == (3, "")
    assert len(err) == 3, err  # each retry, then why it gave up
    assert err[0].startswith("stellar-live-source stream: UNAVAILABLE: ") and err[0].endswith("s")
    assert "retry 1 of 2 in " in err[0] and "retry 2 of 2 in " in err[1]
    assert err[2].startswith("stellar-live-source stream: UNAVAILABLE: ") and "retry" not in err[2]


def test_ctrl_c_exits_130_without_a_traceback():
    with server_process(env_for(SHARED_LAKE)) as srv:
        proc = cli_process("stream", "--server", srv.addr, "--from", str(LAST))  # then waits at the tip
        try:
            assert read_lines(proc, 1, timeout=30)[0].split()[0] == str(LAST)
            wait_for_health(srv, lambda h: h["active_streams"] == 1)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 130 and "Traceback" not in err, err


def test_inspect_exits_1_on_a_bad_file_naming_it(tmp_path):
    code, _, err = run_cli("inspect", str(tmp_path / "missing.xdr.zst"))
    assert (code, err) == (1, [f"stellar-live-source inspect: {tmp_path / 'missing.xdr.zst'}: no such file or folder"])
    (tmp_path / "bad.xdr").write_bytes(b"\0\0\0\1" + b"\xff" * 40)
    code, _, err = run_cli("inspect", str(tmp_path / "bad.xdr"))
    assert code == 1 and len(err) == 1 and "bad.xdr" in err[0] and "byte" in err[0], err


def test_usage_errors_exit_2():
    assert run_cli("stream", "--from", "x")[0] == 2  # argparse's own
    assert run_cli("nope")[0] == 2
    assert run_cli("stream", "--from", "2", "--max-retries", "-1")[0] == 2
    code, _, err = run_cli("inspect", "--max-size", "lots")
    assert code == 2 and "lots" in "\n".join(err)


def test_pack_then_latest_through_the_same_parts(tmp_path):
    source = list(ledgers_of([LEDGERS / "testnet" / "lighthorizon_1410048-1410367" / "1410048.xdr"], MAX_OBJECT_BYTES))
    write_lake(tmp_path, renumber(source, 100, 10), ledgers_per_file=4, files_per_partition=2)
    assert run_cli("latest", env=lake_env(tmp_path))[:2] == (0, "109\n")
    assert run_cli("oldest", env=lake_env(tmp_path))[:2] == (0, "100\n")
    code, _, err = run_cli("latest", env=lake_env(tmp_path, LEDGERS_PER_FILE=8))
    assert code == 2 and "LEDGERS_PER_FILE=8 contradicts the lake manifest's ledgersPerBatch=4" in err[0]


def test_version_names_the_core():
    code, out, _ = run_cli("--version")
    assert code == 0 and out.startswith("stellar-live-source ") and "core: " in out
    assert (
        subprocess.run(
            [sys.executable, "-c", "import stellar_live_source as s; print(s.__version__)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        in out
    )


def test_the_process_ends_through_run_with_its_output_flushed(tmp_path):
    """The script and ``python -m`` both exit through ``cli.run``, which skips
    the interpreter's finalization (obstore's runtime threads can abort a
    finalizing process) after flushing what the command wrote."""
    import tomllib

    from .conftest import ROOT

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"stellar-live-source": "stellar_live_source.cli:run"}
    code = (
        "import atexit, sys; atexit.register(print, 'finalized', file=sys.stderr); "
        "sys.argv = ['stellar-live-source', 'config', 'validate']; "
        "from stellar_live_source.cli import run; run()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "storage.type" in out.stdout or "STORAGE_TYPE" in out.stdout  # the command's output, flushed
    assert "finalized" not in out.stderr  # no finalization: atexit handlers do not run
