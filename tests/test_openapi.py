"""docs/openapi.yaml describes what the HTTP listeners answer: the running
server's /health, /ready (200, and 503 while not ready) and /metrics are
validated against it with openapi-core."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

from stellar_live_source.ops.readiness import STORAGE

from .conftest import needs_testdata
from .service_support import SHARED_LAKE, env_for, running_app, server_process

SPEC = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"


@pytest.fixture(scope="module")
def spec() -> OpenAPI:
    return OpenAPI.from_file_path(str(SPEC))


def checked(spec: OpenAPI, url: str) -> requests.Response:
    """GET ``url``; the answer, validated against the spec (raises if it does not match)."""
    r = requests.get(url, timeout=10)
    spec.validate_response(RequestsOpenAPIRequest(r.request), RequestsOpenAPIResponse(r))
    return r


@needs_testdata
def test_the_running_servers_answers_match_the_spec(spec):
    with server_process(env_for(SHARED_LAKE)) as served:
        health = checked(spec, served.url("/health"))
        ready = checked(spec, served.url("/ready"))
        metrics = checked(spec, served.url("/metrics"))
    assert health.status_code == 200 and ready.status_code == 200
    assert ready.json()["ready"] is True and ready.json()["reasons"] == {}
    assert ready.json()["newest_ledger"] == 1410367
    assert metrics.headers["Content-Type"].startswith("text/plain")
    assert "stellar_live_source_" in metrics.text


@needs_testdata
async def test_not_ready_is_503_and_matches_the_spec(spec):
    async with running_app(env_for(SHARED_LAKE)) as (app, _):
        app.readiness.hold(STORAGE, "the storage's circuit breaker is open")
        assert app.bound is not None
        base = f"http://127.0.0.1:{app.bound.health_port}"
        ready = await asyncio.to_thread(checked, spec, f"{base}/ready")
        health = await asyncio.to_thread(checked, spec, f"{base}/health")
    assert ready.status_code == 503 and health.status_code == 200
    for body in (ready.json(), health.json()):
        assert body["ready"] is False and body["status"] == "NOT_SERVING"
        assert list(body["reasons"]) == [STORAGE]


@needs_testdata
def test_the_spec_refuses_a_report_it_does_not_describe(spec):
    """The check has teeth: a report missing a field, or with one it does not name, fails."""
    with server_process(env_for(SHARED_LAKE)) as served:
        r = requests.get(served.url("/health"), timeout=10)
    body = r.json()
    for wrong in ({k: v for k, v in body.items() if k != "ready"}, body | {"extra": 1}, body | {"newest_ledger": "x"}):
        r._content = json.dumps(wrong).encode()
        with pytest.raises(Exception, match="[Ii]nvalid|[Vv]alidat"):
            spec.validate_response(RequestsOpenAPIRequest(r.request), RequestsOpenAPIResponse(r))
