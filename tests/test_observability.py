"""Issue 14's whole picture in one run of the real server: tracing to an OTLP
receiver in the test, JSON logs, metrics. A tip stream with a ``traceparent``
and an ``x-request-id``: the ID comes back in the initial metadata; while the
stream is still open, /metrics counts what it was sent and knows the lake's
newest ledger; failing calls move their error counters and the SLI; after
SIGTERM, the call's span sits in the consumer's trace with the request ID,
and every log line of the call carries its correlation ID and trace ID."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stellar_live_source import api
from stellar_live_source.core.keys import Layout

from .conftest import needs_testdata
from .service_support import SHARED_LAKE, http_get, server_process
from .test_tracing import PARENT_ID, STREAM, TRACE_ID, TRACEPARENT, attrs, receiver, traced_env

pytestmark = [needs_testdata, pytest.mark.timeout(90)]

FIRST, LAST = 1410048, 1410367
GAP = 1410112  # its object removed: later ones exist, so a stream from it meets a gap
P = "stellar_live_source_"


def metrics(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, body = http_get(url)
    assert status == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
    }


def total(page: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in page.items() if n == name and set(labels.items()) <= ls)


def test_one_traced_call_seen_in_its_span_its_metrics_and_its_log_lines(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    shutil.copytree(SHARED_LAKE, lake)
    (lake / Layout(64, 10).object_key(GAP)).unlink()
    with receiver() as (rec, port):
        env = traced_env(port, LOG_FORMAT="json", LOG_PROGRESS_LEDGERS="64", MISSING_OBJECT_WAIT="200ms")
        env["BUCKET_NAME"] = str(lake)
        with server_process(env) as srv:
            channel = grpc.insecure_channel(srv.addr)
            call: Any = channel.unary_stream(
                api.STREAM_METHOD, request_serializer=lambda m: m.SerializeToString(), response_deserializer=None
            )
            start = GAP + 64  # past the gap: to the lake's last ledger, then waiting at the tip
            tip = call(
                api.StreamLedgersRequest(start_ledger=start, end_ledger=0),
                metadata=(("traceparent", TRACEPARENT), ("x-request-id", "obs-1")),
                timeout=60,
            )
            assert dict(tip.initial_metadata())["x-request-id"] == "obs-1"
            frames = [next(tip) for _ in range(LAST - start + 1)]

            # The stream is open at the tip: its ledgers and bytes are counted already.
            page = metrics(srv.url("/metrics"))
            assert total(page, P + "ledgers_sent_total") == len(frames)
            assert total(page, P + "bytes_sent_total") == sum(map(len, frames))
            assert total(page, P + "lake_newest_ledger") == LAST
            assert total(page, P + "sli_availability") == 1

            # Failing calls: a client's (good for the SLI) and the lake's (bad).
            for bad_start, code in ((1, grpc.StatusCode.INVALID_ARGUMENT), (GAP, grpc.StatusCode.NOT_FOUND)):
                with pytest.raises(grpc.RpcError) as failed:
                    list(call(api.StreamLedgersRequest(start_ledger=bad_start, end_ledger=0), timeout=30))
                assert failed.value.code() == code
            page = metrics(srv.url("/metrics"))
            assert total(page, P + "errors_total", type="BadRequest") == 1
            assert total(page, P + "errors_total", type="LedgerMissing") == 1
            assert 0 < total(page, P + "sli_availability") < 1

            tip.cancel()
            channel.close()
            srv.proc.terminate()  # SIGTERM: spans flushed on the way out
            assert srv.proc.wait(15) == 0
            assert srv.proc.stdout is not None
            output = srv.proc.stdout.read()

        spans = rec.named(STREAM)
        ours = [s for s in spans if attrs(s).get("stellar.request_id") == "obs-1"]
        assert ours, [s.name for s in rec.spans]
        span = ours[0]
        assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == PARENT_ID
        a = attrs(span)
        assert a["stellar.request_id"] == "obs-1" and a["stellar.start_ledger"] == start
        assert a["stellar.ledgers_sent"] >= len(frames)

    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert len(lines) == len(output.strip().splitlines())  # every line is one JSON event
    mine = [line for line in lines if line.get("request_id") == "obs-1"]
    progress = [line for line in mine if "ledgers sent" in line["message"]]
    assert len(progress) >= (LAST - start + 1) // 64  # progress lines, never one per ledger
    assert all(line.get("trace_id") == TRACE_ID for line in mine)
    # No line about this stream lacks its correlation ID.
    assert not [line for line in lines if f"from {start}" in line["message"] and line.get("request_id") != "obs-1"]
