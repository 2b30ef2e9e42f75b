"""monitoring/: the Prometheus rules checked and unit-tested by promtool, every
metric the rules and the dashboard name exported by a real server (scraped
after real calls), every alert's runbook present with its three parts, and
the Grafana dashboard well formed."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from stellar_live_source.ops.config import defaults

from .conftest import ROOT, needs_testdata
from .service_support import SHARED_LAKE, env_for, http_get, running_app
from .support.tools import run
from .test_metrics import FIRST, channel, range_status, stream_status

MONITORING = ROOT / "monitoring"
ALERTS = MONITORING / "alerts.yaml"
RECORDING = MONITORING / "recording.yaml"
DASHBOARD = MONITORING / "grafana" / "stellar-live-source.json"
RUNBOOKS = ROOT / "docs" / "runbooks"
RUNBOOK_PREFIX = "https://github.com/withObsrvr/stellar-live-source-datalake/blob/main/docs/runbooks/"
JOB = 'job="stellar-live-source"'

# -- naming the metrics of a PromQL expression --

#: Words of PromQL that are not series names (keywords, aggregations' modifiers).
KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "inf",
        "nan",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_NAME = re.compile(r"(?<![\w$.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The series names ``expr`` selects: identifiers that are not functions,
    keywords, label names (in matchers or grouping), numbers or durations."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    text = re.sub(r"\boffset\s+\S+", "", text)
    names = set(_NAME.findall(text))
    return {n for n in names if n.lower() not in KEYWORDS and not re.fullmatch(r"\d.*", n)}


def test_metric_names_finds_series_and_only_series():
    expr = (
        'sum by (job, le) (rate(foo_bucket{job="x", code!~"OK|bar"}[5m])) / on (job) group_left () '
        "job:bar:rate5m > 0.5 and deriv(baz[10m] offset 1h) or vector(1) unless qux_total{a='b'} "
        '* 2e-3 + histogram_quantile(0.99, x_count) + label_values_missing{v="$instance"}[$__rate_interval]'
    )
    assert metric_names(expr) == {
        "foo_bucket",
        "job:bar:rate5m",
        "baz",
        "qux_total",
        "x_count",
        "label_values_missing",
    }


def rules(path: Path) -> list[dict[str, Any]]:
    return [r for group in yaml.safe_load(path.read_text())["groups"] for r in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules(ALERTS) if "alert" in r]


def recorded() -> set[str]:
    return {r["record"] for r in rules(RECORDING)}


def dashboard() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return parsed


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    out: list[dict[str, Any]] = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return [p for p in out if p.get("type") != "row"]


def referenced() -> dict[str, set[str]]:
    """Where each series name is referenced: the rule files and the dashboard."""
    where: dict[str, set[str]] = {}
    exprs = [
        (f"{path.name}: {r.get('alert') or r.get('record')}", r["expr"])
        for path in (RECORDING, ALERTS)
        for r in rules(path)
    ]
    for p in panels(dashboard()):
        exprs += [(f"dashboard panel {p['title']!r}", t["expr"]) for t in p.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        query = var.get("definition") or ""
        for name in re.findall(r"label_values\(\s*([A-Za-z_:][\w:]*)", query):
            where.setdefault(name, set()).add(f"dashboard variable {var['name']}")
    for origin, expr in exprs:
        for name in metric_names(expr):
            where.setdefault(name, set()).add(origin)
    return where


def series_of(text: str) -> set[str]:
    """The sample names a scrape can hold: each sample seen, and every family's
    names by its type (a labelled family with no child yet shows none)."""
    names: set[str] = set()
    for fam in text_string_to_metric_families(text):
        names.update(s.name for s in fam.samples)
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("_sum", "_count", ""),
            "info": ("_info",),
        }.get(fam.type, ("",))
        names.update(fam.name + s for s in suffixes)
    return names


def unknown(where: dict[str, set[str]], exported: set[str], allowed: set[str]) -> dict[str, set[str]]:
    return {n: w for n, w in where.items() if n not in exported and n not in allowed}


def test_a_rule_naming_a_metric_that_is_not_exported_is_caught():
    where = {"stellar_live_source_grpc_requests_total": {"a"}, "stellar_live_source_grpc_request_total": {"b"}}
    exported = {"stellar_live_source_grpc_requests_total"}
    assert unknown(where, exported, {"up"}) == {"stellar_live_source_grpc_request_total": {"b"}}


@needs_testdata
async def test_every_metric_the_rules_and_the_dashboard_name_is_exported():
    async with running_app(env_for(SHARED_LAKE)) as (app, addr), channel(addr) as ch:
        assert await stream_status(ch, FIRST, FIRST + 70) == grpc.StatusCode.OK
        assert await stream_status(ch, 1) == grpc.StatusCode.INVALID_ARGUMENT  # errors_total{type} exists
        assert await range_status(ch, FIRST, FIRST + 3) == grpc.StatusCode.OK
        assert app.bound is not None and app.bound.metrics_port
        status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{app.bound.metrics_port}/metrics")
    assert status == 200
    exported = series_of(body.decode())
    assert "stellar_live_source_grpc_requests_total" in exported
    assert "stellar_live_source_processing_duration_seconds_bucket" in exported
    where = referenced()
    assert len(where) > 20  # the extraction found the names
    missing = unknown(where, exported, {"up"} | recorded())
    assert not missing, f"referenced but not exported by the service: {missing}"


def test_promtool_checks_the_rule_files():
    out = run("promtool", "check", "rules", RECORDING, ALERTS)
    assert "SUCCESS" in out.stdout + out.stderr


def test_promtool_unit_tests_pass():
    files = sorted((MONITORING / "tests").glob("*.yaml"))
    assert files
    run("promtool", "test", "rules", *files)


def test_every_alert_is_unit_tested_firing_and_not_firing():
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in (MONITORING / "tests").glob("*.yaml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for t in case.get("alert_rule_test", []):
                (fires if t.get("exp_alerts") else quiet).add(t["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names <= fires, f"no firing case: {sorted(names - fires)}"
    assert names <= quiet, f"no not-firing case: {sorted(names - quiet)}"


def test_the_slo_rules_are_checked_by_expression_tests():
    checked = set()
    for path in (MONITORING / "tests").glob("*.yaml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for t in case.get("promql_expr_test", []):
                checked |= metric_names(t["expr"])
    assert {
        "stellar_live_source:slo_availability:objective",
        "stellar_live_source:slo_error_budget:ratio",
        "job:stellar_live_source_slo_requests:rate5m",
        "job:stellar_live_source_slo_bad_requests:rate5m",
        "job:stellar_live_source_slo_error_ratio:rate5m",
    } <= checked


def test_the_objective_is_slo_availability_default():
    (objective,) = [r for r in rules(RECORDING) if r["record"] == "stellar_live_source:slo_availability:objective"]
    assert objective["expr"] == f"vector({defaults().monitoring.slo_availability})"


def test_the_slo_split_is_the_service_s():
    from stellar_live_source.ops.sli import GOOD_CODES, GOOD_ERRORS

    text = RECORDING.read_text()
    (good,) = set(re.findall(r'code!~"([^"]+)"', text))
    assert set(good.split("|")) == GOOD_CODES
    (types,) = set(re.findall(r'type=~"([^"]+)"', text))
    assert set(types.split("|")) == set().union(*GOOD_ERRORS.values())


def test_every_alert_has_a_severity_annotations_and_a_runbook_with_three_parts():
    found = alerts()
    assert len(found) >= 8
    for a in found:
        name = a["alert"]
        assert a["labels"]["severity"] in ("critical", "warning"), name
        ann = a["annotations"]
        assert ann.get("summary") and ann.get("description"), name
        url = ann["runbook_url"]
        assert url.startswith(RUNBOOK_PREFIX), (name, url)
        page = RUNBOOKS / Path(urlparse(url).path).name
        assert page.is_file(), f"{name}: {page} does not exist"
        text = page.read_text()
        assert text.startswith(f"# {name}\n"), page
        heads = re.findall(r"^## (.+)$", text, re.M)
        assert heads == ["What it means", "How to confirm", "What to do"], (page, heads)
        confirm = text.split("## How to confirm", 1)[1].split("## What to do", 1)[0]
        assert "`" in confirm and ("/ready" in confirm or "/health" in confirm), f"{page}: no PromQL or endpoint"
        assert JOB in a["expr"] or "job:" in a["expr"], f"{name}: no job selector"


def test_every_selector_names_the_job():
    for path in (RECORDING, ALERTS):
        for r in rules(path):
            for sel in re.findall(r"\b(?:stellar_live_source_\w+|up)\{([^}]*)\}", r["expr"]):
                assert JOB in sel, (path.name, r.get("alert") or r.get("record"), sel)


def test_the_dashboard_parses_and_every_panel_has_a_target():
    dash = dashboard()
    assert dash["uid"] and dash["title"]
    ps = panels(dash)
    assert len(ps) >= 10
    ids = [p["id"] for p in ps]
    assert len(ids) == len(set(ids))
    for p in ps:
        targets = p.get("targets") or []
        assert targets and all(t.get("expr", "").strip() for t in targets), p["title"]
    text = " ".join(t["expr"] for p in ps for t in p["targets"])
    for needed in (
        "ledgers_sent_total",
        "stream_lag_ledgers_max",
        "processing_duration_seconds_bucket",
        "errors_total",
        "cache_hits_total",
        "storage_requests_total",
        "breaker_state",
    ):
        assert needed in text, needed


def test_the_dashboard_is_provisioned():
    provider = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "dashboards" / "stellar-live-source.yaml").read_text()
    )
    (p,) = provider["providers"]
    assert p["type"] == "file" and p["options"]["path"]
    source = yaml.safe_load((MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert [d["type"] for d in source["datasources"]] == ["prometheus"]


@pytest.mark.parametrize("expr", ["stellar_live_source_no_such_metric_total", "up"])
def test_the_extraction_sees_a_bare_name(expr: str):
    assert metric_names(expr) == {expr}
