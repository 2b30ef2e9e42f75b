"""The README is a reference, so it must stay true to the code:

- its settings table (between ``<!-- settings`` and ``<!-- /settings -->``)
  lists exactly the settings of ``ops.config.SETTINGS``, in the code's order,
  each with its environment name, aliases, YAML key and default as the code
  writes it (``Setting.default``: ``30s``, ``256MiB``, ``""`` for empty);
- it names every command and option of ``cli.parser()``;
- its two commands are ``make run`` and ``make test``, and both are targets
  of the Makefile.

The checks are functions of the README's text, so the tests at the end can
break a copy of the table and see each check fail.
"""

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from stellar_live_source import cli
from stellar_live_source.ops.config import SETTINGS, Setting

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"

TABLE_OPEN = "<!-- settings"
TABLE_CLOSE = "<!-- /settings -->"
EMPTY = '""'  # how the table writes an empty default
HEADER = ["environment (aliases)", "yaml key", "default"]  # then the meaning
TWO_COMMANDS = "## Two commands on a fresh machine"
COMMANDS = "## Commands"

_CODE = re.compile(r"`([^`]*)`")


class Row(NamedTuple):
    env: str
    aliases: tuple[str, ...]
    yaml_key: str
    default: str


def readme() -> str:
    return README.read_text(encoding="utf-8")


def _single(cell: str, what: str, line: str) -> str:
    m = re.fullmatch(r"`([^`]*)`", cell)
    if m is None:
        raise ValueError(f"the {what} cell is not one `code` span: {line!r}")
    return m[1]


def table_rows(text: str) -> list[Row]:
    """The rows of the README's settings table (ValueError when it cannot be read)."""
    if text.count(TABLE_OPEN) != 1 or text.count(TABLE_CLOSE) != 1:
        raise ValueError(f"the README needs exactly one {TABLE_OPEN} ... {TABLE_CLOSE} block")
    start = text.index(TABLE_OPEN)
    end = text.index(TABLE_CLOSE)
    if end < start:
        raise ValueError(f"{TABLE_CLOSE} comes before {TABLE_OPEN}")
    lines = text[start:end].splitlines()[1:]  # the opening comment's line is not the table's
    table = [line.strip() for line in lines if line.strip()]
    if len(table) < 2 or not all(line.startswith("|") for line in table):
        raise ValueError("the settings block must hold a Markdown table and nothing else")
    header, separator, *body = table
    if not set(separator) <= set("|-: "):
        raise ValueError(f"the table's second line is not a separator: {separator!r}")
    if [c.strip().lower() for c in header.strip("|").split("|")][:3] != HEADER:
        raise ValueError(f"unexpected table header: {header!r}")
    rows = []
    for line in body:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) < 4:
            raise ValueError(f"a row needs four cells: {line!r}")
        names = _CODE.findall(cells[0])
        if not names or not re.fullmatch(r"`[A-Z0-9_]+(?:<NAME>)?`(?: \(alias `[A-Z0-9_]+`\))*", cells[0]):
            raise ValueError(f"the environment cell is not `NAME` (alias `OTHER`)...: {line!r}")
        default = _single(cells[2], "default", line)
        rows.append(
            Row(names[0], tuple(names[1:]), _single(cells[1], "YAML key", line), "" if default == EMPTY else default)
        )
    return rows


def row_of(s: Setting) -> Row:
    return Row(s.env, s.aliases, s.yaml_key, s.default)


def table_problems(text: str) -> list[str]:
    """Every way the README's table and ``SETTINGS`` differ (empty: none)."""
    try:
        rows = table_rows(text)
    except ValueError as exc:
        return [str(exc)]
    problems = []
    in_readme = {r.env: r for r in rows}
    in_code = {s.env: s for s in SETTINGS}
    for env in in_readme.keys() - in_code.keys():
        problems.append(f"the README lists {env}, which is no setting of ops.config")
    for env in in_code.keys() - in_readme.keys():
        problems.append(f"the setting {env} ({in_code[env].yaml_key}) is missing from the README's table")
    for env in sorted({r.env for r in rows if [x.env for x in rows].count(r.env) > 1}):
        problems.append(f"the README lists {env} more than once")
    for env, s in in_code.items():
        row = in_readme.get(env)
        if row is not None and row != row_of(s):
            problems.append(f"{env}: the README says {row}, the code {row_of(s)}")
    if not problems and [r.env for r in rows] != [s.env for s in SETTINGS]:
        problems.append("the README's rows are not in the code's order (sections, then fields, as ops.config)")
    return problems


def section(text: str, heading: str) -> str:
    """The text under a ``## `` heading, up to the next one."""
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def cli_commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every command of the CLI, nested ones as "config validate", with its parser."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix}{name}"
                found[path] = sub
                found.update(cli_commands(sub, path + " "))
    return found


def long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}


def two_commands(text: str) -> list[str]:
    """The commands of the README's "two commands" block, comments dropped."""
    block = re.search(r"```sh\n(.*?)```", section(text, TWO_COMMANDS), re.S)
    assert block is not None, f"no ```sh block under {TWO_COMMANDS!r}"
    return [line.split("#", 1)[0].strip() for line in block[1].splitlines() if line.split("#", 1)[0].strip()]


# -- the settings table --


def test_the_settings_table_is_the_settings_code() -> None:
    problems = table_problems(readme())
    assert not problems, "README.md's settings table and ops.config.SETTINGS differ:\n" + "\n".join(problems)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_each_setting_has_its_row(setting: Setting) -> None:
    rows = {r.env: r for r in table_rows(readme())}
    assert rows.get(setting.env) == row_of(setting)


# -- the CLI --


def test_every_command_is_in_the_readme() -> None:
    text = readme()
    commands = cli_commands(cli.parser())
    assert {"serve", "config validate", "stream", "latest", "oldest", "inspect", "pack"} <= commands.keys()
    missing = [c for c in commands if not re.search(rf"`{re.escape(c)}[ `]", text)]
    assert not missing, f"commands of cli.parser() the README does not name: {missing}"


def test_every_option_is_in_the_readme() -> None:
    text = section(readme(), COMMANDS)
    missing = {
        f"{name} {option}"
        for name, sub in cli_commands(cli.parser()).items()
        for option in long_options(sub)
        if not re.search(rf"{re.escape(option)}(?![\w-])", text)
    }
    missing |= {o for o in long_options(cli.parser()) if o not in text}
    assert not missing, f"options of cli.parser() the README's {COMMANDS!r} does not name: {sorted(missing)}"


# -- the two commands --


def test_the_two_commands_are_make_run_and_make_test() -> None:
    assert two_commands(readme()) == ["make run", "make test"]


def test_the_two_commands_are_makefile_targets() -> None:
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", MAKEFILE.read_text(encoding="utf-8"), re.M))
    for command in two_commands(readme()):
        make, target = command.split()
        assert make == "make" and target in targets, f"{command!r}: no such target in the Makefile"


# -- the checks themselves fail on a broken table --


def _rows(text: str) -> list[str]:
    start = text.index(TABLE_OPEN)
    return [line for line in text[start : text.index(TABLE_CLOSE)].splitlines() if line.startswith("| `")]


def _with_cell(text: str, line: str, i: int, value: str) -> str:
    cells = line.split(" | ")
    cells[i] = value
    return text.replace(line, " | ".join(cells), 1)


def _drop_row(text: str) -> str:
    return text.replace(_rows(text)[0] + "\n", "", 1)


def _extra_row(text: str) -> str:
    return text.replace(TABLE_CLOSE, "| `NO_SUCH_SETTING` | `server.no_such` | `1` | nothing |\n" + TABLE_CLOSE, 1)


def _wrong_default(text: str) -> str:
    return _with_cell(text, _rows(text)[-1], 2, "`not the default`")


def _empty_default(text: str) -> str:
    line = next(r for r in _rows(text) if r.split(" | ")[2] != f"`{EMPTY}`")
    return _with_cell(text, line, 2, f"`{EMPTY}`")


def _wrong_yaml_key(text: str) -> str:
    return _with_cell(text, _rows(text)[0], 1, "`elsewhere.key`")


def _lost_alias(text: str) -> str:
    line = next(r for r in _rows(text) if "(alias `" in r)
    return text.replace(line, re.sub(r" \(alias `[A-Z0-9_]+`\)", "", line), 1)


def _swapped_rows(text: str) -> str:
    a, b = _rows(text)[:2]
    return text.replace(a + "\n" + b, b + "\n" + a, 1)


def _no_markers(text: str) -> str:
    return text.replace(TABLE_CLOSE, "", 1)


@pytest.mark.parametrize(
    "breaks",
    [_drop_row, _extra_row, _wrong_default, _empty_default, _wrong_yaml_key, _lost_alias, _swapped_rows, _no_markers],
    ids=lambda f: f.__name__.strip("_"),
)
def test_a_broken_table_is_found(breaks: Callable[[str], str]) -> None:
    text = readme()
    broken = breaks(text)
    assert broken != text, "the mutation did not apply: the README's table changed shape"
    assert table_problems(broken)


# -- SECURITY.md: each point names the test that shows it --------------------------

SECURITY = ROOT / "SECURITY.md"
_TEST_REF = re.compile(r"`((?:tests/)?[\w/]+\.py|tests/fuzz/)(?:::(\w+))?`")


def missing_test_refs(text: str) -> list[str]:
    """The ``file.py::test_name`` references of ``text`` with no such file or test in tests/."""
    missing = []
    for name, test in _TEST_REF.findall(text):
        path = ROOT / (name if name.startswith("tests") else f"tests/{name}")
        if not path.exists() or (test and not re.search(rf"^\s*(async )?def {test}\b", path.read_text(), re.M)):
            missing.append(f"{name}::{test}" if test else name)
    return missing


def test_security_names_tests_that_exist():
    text = SECURITY.read_text()
    assert len(_TEST_REF.findall(text)) >= 20  # the threat model points at its tests
    assert missing_test_refs(text) == []
    assert missing_test_refs("`test_auth.py::test_no_such_test`, `test_nope.py`") == [
        "test_auth.py::test_no_such_test",
        "test_nope.py",
    ]
