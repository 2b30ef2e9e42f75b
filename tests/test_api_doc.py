"""docs/api.md against the protos: every RPC of both ledger services, every
field of every message they take or return (by its number), and every status
code the service ends calls with; and the README links it."""

from __future__ import annotations

import re

import pytest

from stellar_live_source import api
from stellar_live_source.errors import OUTCOMES

from .conftest import ROOT

DOC = (ROOT / "docs" / "api.md").read_text()
SERVICES = (api.SERVICE, api.V1_SERVICE)
#: Statuses that come from the door, grpc or the client rather than the error model.
OTHER_STATUSES = {"OK", "CANCELLED", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "INTERNAL"}


def section(service: str) -> str:
    """The part of the page under ``## `service```, up to the next ``## ``."""
    m = re.search(rf"^## `{re.escape(service)}`\n(.*?)(?=^## )", DOC, re.M | re.S)
    assert m, f"docs/api.md has no section ## `{service}`"
    return m[1]


def messages(service: str) -> list:
    """Every message a service's RPCs take or return, and the messages inside them."""
    seen: dict[str, object] = {}
    todo = []
    for method in api.POOL.FindServiceByName(service).methods:
        todo += [method.input_type, method.output_type]
    while todo:
        m = todo.pop()
        if m.full_name in seen or m.full_name.startswith("google.protobuf.") or m.GetOptions().map_entry:
            continue
        seen[m.full_name] = m
        todo += [f.message_type for f in m.fields if f.message_type is not None]
    return list(seen.values())


@pytest.mark.parametrize("service", SERVICES)
def test_every_rpc_is_documented_with_its_types(service):
    text = section(service)
    for method in api.POOL.FindServiceByName(service).methods:
        out = method.output_type.full_name
        shown_out = out if out.split(".")[0] != service.split(".")[0] else method.output_type.name
        stream = "stream " if method.server_streaming else ""
        expected = f"### `{method.name}({_name(method.input_type, service)}) returns ({stream}{shown_out})`"
        assert expected in text, f"{service}: no heading {expected}"


def _name(message, service: str) -> str:
    """How the page writes a message type: short within its own package, full otherwise."""
    package = service.rsplit(".", 1)[0]
    return message.name if message.full_name == f"{package}.{message.name}" else message.full_name


@pytest.mark.parametrize("service", SERVICES)
def test_every_field_is_documented_with_its_number(service):
    text = section(service)
    missing = []
    for m in messages(service):
        for f in m.fields:
            # `Message.field` (n), or in a row listing several fields of one message: `.field` (n)
            if f"`{m.name}.{f.name}` ({f.number})" not in text and f"`.{f.name}` ({f.number})" not in text:
                missing.append(f"{m.full_name}.{f.name} ({f.number})")
    assert not missing, f"{service}: fields not in docs/api.md: {missing}"


def test_every_status_the_service_returns_is_in_the_table():
    table = DOC[DOC.index("## Status codes") : DOC.index("## Resuming")]
    documented = set(re.findall(r"^\| `([A-Z_]+)`", table, re.M))
    # ConfigError's FAILED_PRECONDITION ends a start or a command, never a call.
    returned = {o.status for o in OUTCOMES.values()} - {"FAILED_PRECONDITION"} | OTHER_STATUSES
    assert returned <= documented, f"not in the status table: {sorted(returned - documented)}"


def test_the_clients_of_four_languages_lift_the_receive_limit():
    for language, setting in (
        ("go", "MaxCallRecvMsgSize"),
        ("js", "grpc.max_receive_message_length"),
        ("python", "grpc.max_receive_message_length"),
        ("rust", "max_decoding_message_size"),
    ):
        block = re.search(rf"```{language}\n(.*?)```", DOC, re.S)
        assert block and setting in block[1], language


def test_the_readme_links_the_api_reference_and_the_http_spec():
    readme = (ROOT / "README.md").read_text()
    assert "(docs/api.md)" in readme and "(docs/openapi.yaml)" in readme
