"""One error model: every exception class of the package has one root, and one
table gives each its gRPC status and the command's exit code."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import stellar_live_source
from stellar_live_source import errors as e

# (class, gRPC status, exit code): the table, written out independently of the code.
TABLE = [
    (e.ZstdError, "DATA_LOSS", 1),
    (e.XdrError, "DATA_LOSS", 1),
    (e.HashError, "DATA_LOSS", 1),
    (e.CorruptObject, "DATA_LOSS", 1),
    (e.ChainBroken, "DATA_LOSS", 1),
    (e.StorageError, "UNAVAILABLE", 3),
    (e.RetriesExhausted, "UNAVAILABLE", 3),
    (e.StorageUnavailable, "UNAVAILABLE", 3),
    (e.Draining, "UNAVAILABLE", 3),
    (e.TooManyStreams, "RESOURCE_EXHAUSTED", 3),
    (e.ObjectNotFound, "NOT_FOUND", 1),
    (e.LedgerMissing, "NOT_FOUND", 1),
    (e.EmptyLake, "NOT_FOUND", 1),
    (e.OutOfRange, "OUT_OF_RANGE", 1),
    (e.BadRequest, "INVALID_ARGUMENT", 2),
    (e.UsageError, "INVALID_ARGUMENT", 2),
    (e.BadInputFile, "INVALID_ARGUMENT", 1),
    (e.ConfigError, "FAILED_PRECONDITION", 2),
    (e.StorageConfigError, "FAILED_PRECONDITION", 2),
    (e.LakeConfigError, "FAILED_PRECONDITION", 2),
]
# Control flow inside the pure twins (the generated walker's, zstd's), caught where raised.
PRIVATE = {
    "stellar_live_source.core._walk_gen_py.WalkFailure",
    "stellar_live_source.core._zstd_py._Truncated",
    "stellar_live_source.core._zstd_py._Unknown",
}


def _instance(cls: type[e.LiveSourceError]) -> e.LiveSourceError:
    return cls("why", 0, "T") if cls is e.XdrError else cls("why")


@pytest.mark.parametrize(("cls", "status", "code"), TABLE, ids=[c.__name__ for c, *_ in TABLE])
def test_each_error_has_its_status_and_exit_code(cls, status, code):
    assert e.outcome(_instance(cls)) == (status, code)


def test_every_public_error_is_in_the_table():
    public = {
        obj for name in e.__all__ if inspect.isclass(obj := getattr(e, name)) and issubclass(obj, e.LiveSourceError)
    }
    groups = {e.LiveSourceError, e.BadData, e.CoreError, e.Unavailable, e.NotInLake}
    assert public - groups == {cls for cls, *_ in TABLE}


def test_every_exception_class_of_the_package_has_the_one_root():
    """Walk every module (the compiled ones too): an exception class defined
    anywhere in the package derives from LiveSourceError."""
    found = {}
    for mod in pkgutil.walk_packages(stellar_live_source.__path__, "stellar_live_source."):
        if mod.name.endswith("__main__") or ".tools.synthetic" in mod.name:
            continue  # the generator's entry point; synthetic needs the [sdk] extra
        module = importlib.import_module(mod.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == mod.name:
                found[f"{mod.name}.{name}"] = obj
    assert len(found) >= len(TABLE)
    rogue = {name for name, cls in found.items() if not issubclass(cls, e.LiveSourceError)} - PRIVATE
    assert not rogue


def test_statuses_map_back_to_exit_codes():
    assert e.exit_code_for_status("OK") == 0
    assert e.exit_code_for_status("UNAVAILABLE") == 3
    assert e.exit_code_for_status("RESOURCE_EXHAUSTED") == 3
    assert e.exit_code_for_status("INVALID_ARGUMENT") == 2
    assert e.exit_code_for_status("DATA_LOSS") == 1
    assert e.exit_code_for_status("NOT_FOUND") == 1
    assert e.exit_code_for_status("OUT_OF_RANGE") == 1
    assert e.exit_code_for_status("DEADLINE_EXCEEDED") == 1
    assert e.exit_code_for_status("UNAUTHENTICATED") == 1


def test_a_config_error_keeps_every_problem():
    err = e.ConfigError(["a is wrong", "b is wrong"])
    assert err.problems == ["a is wrong", "b is wrong"] and str(err) == "a is wrong\nb is wrong"
    assert e.ConfigError("only one").problems == ["only one"]
    assert isinstance(e.XdrError("x", 1, "T"), ValueError)  # decode errors stay ValueErrors for library users
