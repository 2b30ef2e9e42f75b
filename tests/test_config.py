"""The service configuration: defaults, layers, names, notations, problems."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stellar_live_source.ops import config as c

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "config").glob("*.yaml"))

# The table, written out independently of the code:
# (environment name, YAML key, text to set, expected field value).
NAMES = [
    ("SERVER_HOST", "server.host", "10.0.0.1", "10.0.0.1"),
    ("SERVER_PORT", "server.port", "6000", 6000),
    ("PORT", "server.port", "6001", 6001),
    ("HEALTH_ENABLED", "server.health_enabled", "false", False),
    ("HEALTH_PORT", "server.health_port", "6002", 6002),
    ("GRACEFUL_SHUTDOWN_TIMEOUT", "server.graceful_shutdown_timeout", "5s", 5.0),
    ("MAX_CONCURRENT_STREAMS", "server.max_concurrent_streams", "7", 7),
    ("STORAGE_TYPE", "storage.type", "gcs", "GCS"),
    ("ARCHIVE_STORAGE_TYPE", "storage.type", "s3", "S3"),
    ("BUCKET_NAME", "storage.bucket_name", "lake-a", "lake-a"),
    ("ARCHIVE_BUCKET_NAME", "storage.bucket_name", "lake-b", "lake-b"),
    ("ARCHIVE_PATH", "storage.path", "mainnet/v1", "mainnet/v1"),
    ("AWS_REGION", "storage.region", "eu-west-1", "eu-west-1"),
    ("S3_ENDPOINT_URL", "storage.endpoint", "http://minio:9000", "http://minio:9000"),
    ("S3_FORCE_PATH_STYLE", "storage.force_path_style", "true", True),
    ("S3_ANONYMOUS", "storage.anonymous", "true", True),
    ("HTTP_BASE_URL", "storage.http_base_url", "https://lake.example/pubnet", "https://lake.example/pubnet"),
    ("HTTP_SEARCH_FROM", "storage.http_search_from", "50000000", 50000000),
    ("MANIFEST_PATH", "storage.manifest_path", "meta/manifest.json", "meta/manifest.json"),
    (
        "NETWORK_PASSPHRASE",
        "storage.network_passphrase",
        "Test SDF Network ; September 2015",
        "Test SDF Network ; September 2015",
    ),
    ("LEDGERS_PER_FILE", "storage.ledgers_per_file", "1", 1),
    ("FILES_PER_PARTITION", "storage.files_per_partition", "64000", 64000),
    ("STORAGE_TIMEOUT", "storage.timeout", "2m", 120.0),
    ("STORAGE_MAX_INFLIGHT", "storage.max_inflight", "3", 3),
    ("RETRY_ATTEMPTS", "storage.retry_attempts", "9", 9),
    ("RETRY_BACKOFF", "storage.retry_backoff", "250ms", 0.25),
    ("READAHEAD_BYTES", "storage.readahead_bytes", "8MiB", 8 << 20),
    ("POLL_INTERVAL", "storage.poll_interval", "2s", 2.0),
    ("CACHE_BYTES", "storage.cache_bytes", "1GB", 10**9),
    ("MAX_OBJECT_BYTES", "storage.max_object_bytes", "1GiB", 1 << 30),
    ("MISSING_OBJECT_WAIT", "storage.missing_object_wait", "0", 0.0),
    ("VERIFY_HASH_CHAIN", "stream.verify_hash_chain", "false", False),
    ("XDR_UNKNOWN_ARMS", "stream.xdr_unknown_arms", "hash-chain", "hash-chain"),
    ("RANGE_MAX_LEDGERS", "stream.range_max_ledgers", "10", 10),
    ("RANGE_MAX_BYTES", "stream.range_max_bytes", "1MB", 10**6),
    ("DECODE_WORKERS", "stream.decode_workers", "3", 3),
    ("METRICS_ENABLED", "monitoring.metrics_enabled", "false", False),
    ("METRICS_PORT", "monitoring.metrics_port", "9100", 9100),
    ("LOG_LEVEL", "monitoring.log_level", "DEBUG", "debug"),
    ("LOG_FORMAT", "monitoring.log_format", "text", "text"),
    ("LOG_PROGRESS_LEDGERS", "monitoring.log_progress_ledgers", "500", 500),
    ("TRACING_ENABLED", "monitoring.tracing_enabled", "true", True),
    ("SLO_AVAILABILITY", "monitoring.slo_availability", "0.99", 0.99),
    ("SLO_WINDOW", "monitoring.slo_window", "30m", 1800.0),
    ("ENABLE_FLOWCTL", "flowctl.enabled", "true", True),
    ("FLOWCTL_ENDPOINT", "flowctl.endpoint", "flowctl:8080", "flowctl:8080"),
    ("FLOWCTL_HEARTBEAT_INTERVAL", "flowctl.heartbeat_interval", "1m", 60.0),
    ("FLOWCTL_API", "flowctl.api", "LEGACY", "legacy"),
    ("FLOWCTL_ADVERTISE_HOST", "flowctl.advertise_host", "source-0.lake", "source-0.lake"),
    ("FLOWCTL_COMPONENT_ID", "flowctl.component_id", "stellar-source", "stellar-source"),
    ("FLOWCTL_SERVICE_ID", "flowctl.service_id", "svc-1", "svc-1"),
    ("FLOWCTL_OUTPUT_EVENT_TYPES", "flowctl.output_event_types", "a.B,c.D", "a.B,c.D"),
    ("TLS_ENABLED", "security.tls_enabled", "true", True),
    ("TLS_CERT_PATH", "security.tls_cert_path", "/tls/tls.crt", "/tls/tls.crt"),
    ("TLS_KEY_PATH", "security.tls_key_path", "/tls/tls.key", "/tls/tls.key"),
    ("TLS_CLIENT_CA_PATH", "security.tls_client_ca_path", "/tls/ca.crt", "/tls/ca.crt"),
    ("API_KEY_REQUIRED", "security.api_key_required", "true", True),
    ("API_KEYS_FILE", "security.api_keys_file", "/keys/keys", "/keys/keys"),
    ("ALLOW_INSECURE_API_KEYS", "security.allow_insecure_api_keys", "true", True),
    ("MAX_STREAMS_PER_CLIENT", "limits.max_streams_per_client", "4", 4),
    ("RATE_LIMIT_RPS", "limits.rate_limit_rps", "2.5", 2.5),
    ("RATE_LIMIT_BURST", "limits.rate_limit_burst", "5", 5),
    ("MAX_LEDGERS_PER_SECOND_PER_STREAM", "limits.max_ledgers_per_second_per_stream", "100", 100),
    ("RANGE_INFLIGHT_BYTES", "limits.range_inflight_bytes", "1MiB", 1 << 20),
    ("MAX_START_AHEAD_LEDGERS", "limits.max_start_ahead_ledgers", "10", 10),
    ("BREAKER_FAILURE_THRESHOLD", "resilience.breaker_failure_threshold", "3", 3),
    ("BREAKER_RESET_TIMEOUT", "resilience.breaker_reset_timeout", "5s", 5.0),
]
ALIASES = {"PORT", "ARCHIVE_STORAGE_TYPE", "ARCHIVE_BUCKET_NAME"}
# What some rows need to be valid on their own.
COMPANIONS = {
    "STORAGE_TYPE": {"BUCKET_NAME": "b"},
    "ARCHIVE_STORAGE_TYPE": {"BUCKET_NAME": "b"},
    "VERIFY_HASH_CHAIN": {"XDR_UNKNOWN_ARMS": "error"},
    "TLS_ENABLED": {"TLS_CERT_PATH": "/tls/tls.crt", "TLS_KEY_PATH": "/tls/tls.key"},
    "API_KEY_REQUIRED": {"ALLOW_INSECURE_API_KEYS": "true"},
}


def field(config: c.Config, yaml_key: str):
    section, key = yaml_key.split(".")
    return getattr(getattr(config, section), key)


def problems(environ=None, **kw) -> list[str]:
    with pytest.raises(c.ConfigError) as e:
        c.load(environ or {}, **kw)
    assert str(e.value) == "\n".join(e.value.problems)
    return e.value.problems


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_defaults():
    cfg = c.load({})
    assert c.as_env(cfg) == {
        "SERVER_HOST": "0.0.0.0",
        "HEALTH_ENABLED": "true",
        "SERVER_PORT": "50052",
        "HEALTH_PORT": "8088",
        "GRACEFUL_SHUTDOWN_TIMEOUT": "30s",
        "MAX_CONCURRENT_STREAMS": "100",
        "STORAGE_TYPE": "FS",
        "BUCKET_NAME": "",
        "ARCHIVE_PATH": "",
        "AWS_REGION": "",
        "S3_ENDPOINT_URL": "",
        "S3_FORCE_PATH_STYLE": "false",
        "S3_ANONYMOUS": "false",
        "HTTP_BASE_URL": "",
        "HTTP_SEARCH_FROM": "0",
        "MANIFEST_PATH": ".config.json",
        "NETWORK_PASSPHRASE": "",
        "LEDGERS_PER_FILE": "64",
        "FILES_PER_PARTITION": "10",
        "STORAGE_TIMEOUT": "30s",
        "STORAGE_MAX_INFLIGHT": "128",
        "RETRY_ATTEMPTS": "5",
        "RETRY_BACKOFF": "1s",
        "READAHEAD_BYTES": "64MiB",
        "POLL_INTERVAL": "1s",
        "CACHE_BYTES": "256MiB",
        "MAX_OBJECT_BYTES": "512MiB",
        "MISSING_OBJECT_WAIT": "1m",
        "VERIFY_HASH_CHAIN": "true",
        "XDR_UNKNOWN_ARMS": "error",
        "RANGE_MAX_LEDGERS": "100",
        "RANGE_MAX_BYTES": "64MiB",
        "DECODE_WORKERS": "2",
        "METRICS_ENABLED": "true",
        "METRICS_PORT": "9090",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
        "LOG_PROGRESS_LEDGERS": "10000",
        "TRACING_ENABLED": "false",
        "SLO_AVAILABILITY": "0.999",
        "SLO_WINDOW": "1h",
        "ENABLE_FLOWCTL": "false",
        "FLOWCTL_ENDPOINT": "localhost:8080",
        "FLOWCTL_HEARTBEAT_INTERVAL": "10s",
        "FLOWCTL_API": "v1",
        "FLOWCTL_ADVERTISE_HOST": "",
        "FLOWCTL_COMPONENT_ID": "",
        "FLOWCTL_SERVICE_ID": "",
        "FLOWCTL_OUTPUT_EVENT_TYPES": "raw_ledger_service.RawLedgerChunk",
        "TLS_ENABLED": "false",
        "TLS_CERT_PATH": "",
        "TLS_KEY_PATH": "",
        "TLS_CLIENT_CA_PATH": "",
        "API_KEY_REQUIRED": "false",
        "API_KEYS_FILE": "",
        "ALLOW_INSECURE_API_KEYS": "false",
        "MAX_STREAMS_PER_CLIENT": "0",
        "RATE_LIMIT_RPS": "0.0",
        "RATE_LIMIT_BURST": "20",
        "MAX_LEDGERS_PER_SECOND_PER_STREAM": "0",
        "RANGE_INFLIGHT_BYTES": "256MiB",
        "MAX_START_AHEAD_LEDGERS": "17280",
        "BREAKER_FAILURE_THRESHOLD": "5",
        "BREAKER_RESET_TIMEOUT": "30s",
    }
    assert cfg.storage.cache_bytes == 256 * 2**20 and cfg.storage.missing_object_wait == 60.0
    assert cfg.storage.uses_sample_lake and cfg.storage.http_headers == ()
    assert not cfg.security.tls_enabled and not cfg.security.api_key_required


def test_every_setting_has_a_reload_class():
    assert {s.reload for s in c.SETTINGS} <= set(c.RELOAD_CLASSES)
    by_class = {s.env: s.reload for s in c.SETTINGS}
    # Storage client settings need a restart; read-ahead and the limits apply to new streams.
    for name in ("STORAGE_TIMEOUT", "STORAGE_MAX_INFLIGHT", "S3_ENDPOINT_URL", "STORAGE_TYPE", "BUCKET_NAME"):
        assert by_class[name] == "restart", name
    for name in ("READAHEAD_BYTES", "MAX_STREAMS_PER_CLIENT", "RATE_LIMIT_RPS", "MAX_CONCURRENT_STREAMS"):
        assert by_class[name] == "new-streams", name
    with pytest.raises(TypeError):
        c._opt("X", "int", "1")  # type: ignore[call-arg]  # no reload class: refused


def test_the_table_covers_every_setting():
    # The one mapping (HTTP headers, many variables) has tests of its own.
    single = [s for s in c.SETTINGS if s.kind != "headers"]
    assert [s.env for s in c.SETTINGS if s.kind == "headers"] == ["HTTP_HEADER_<NAME>"]
    declared = {s.env for s in single} | {a for s in single for a in s.aliases}
    assert declared == {name for name, *_ in NAMES}
    assert {a for s in c.SETTINGS for a in s.aliases} == ALIASES
    assert {s.yaml_key for s in single} == {key for _, key, *_ in NAMES}


@pytest.mark.parametrize(("name", "yaml_key", "text", "expected"), NAMES, ids=[n[0] for n in NAMES])
def test_environment_name_maps_to_field(name, yaml_key, text, expected):
    cfg = c.load({name: text, **COMPANIONS.get(name, {})})
    assert field(cfg, yaml_key) == expected


@pytest.mark.parametrize(
    ("name", "yaml_key", "text", "expected"),
    [n for n in NAMES if n[0] not in ALIASES],
    ids=[n[0] for n in NAMES if n[0] not in ALIASES],
)
def test_yaml_key_maps_to_field(tmp_path, name, yaml_key, text, expected):
    section, key = yaml_key.split(".")
    extra = "  bucket_name: b\n" if yaml_key == "storage.type" else ""
    path = write(tmp_path, f"{section}:\n  {key}: {text!r}\n{extra}")
    cfg = c.load(COMPANIONS.get(name, {}), config_file=path)
    assert field(cfg, yaml_key) == expected


def test_yaml_then_environment(tmp_path):
    path = write(tmp_path, "server:\n  port: 6000\n  health_port: 6001\nstorage:\n  timeout: 5s\n")
    cfg = c.load({"CONFIG_FILE": path, "SERVER_PORT": "7000"})
    assert cfg.server.port == 7000  # environment beats YAML
    assert cfg.server.health_port == 6001 and cfg.storage.timeout == 5.0  # YAML beats defaults
    assert cfg.monitoring.metrics_port == 9090  # defaults fill the rest
    # An explicit file wins over CONFIG_FILE; an empty variable counts as unset.
    other = tmp_path / "other.yaml"
    other.write_text("server:\n  port: 6500\n")
    cfg = c.load({"CONFIG_FILE": path, "SERVER_PORT": ""}, config_file=str(other))
    assert cfg.server.port == 6500 and cfg.server.health_port == 8088


def test_native_yaml_values(tmp_path):
    path = write(
        tmp_path, "storage:\n  force_path_style: yes\n  timeout: 1.5\n  cache_bytes: 4096\n  bucket_name:\nsecurity:\n"
    )
    cfg = c.load({}, config_file=path)
    assert cfg.storage.force_path_style is True
    assert (cfg.storage.timeout, cfg.storage.cache_bytes, cfg.storage.bucket_name) == (1.5, 4096, "")


def test_os_environ_is_not_read_when_a_mapping_is_given(monkeypatch):
    monkeypatch.setenv("SERVER_PORT", "1234")
    assert c.load({}).server.port == 50052
    assert c.load().server.port == 1234


DURATIONS = [
    ("500ms", 0.5),
    ("30s", 30.0),
    ("1m", 60.0),
    ("1h", 3600.0),
    ("1.5s", 1.5),
    ("45", 45.0),
    ("0.25", 0.25),
    (" 2 s ", 2.0),
    ("1.5m", 90.0),
]
SIZES = [
    ("4096", 4096),
    ("10B", 10),
    ("1KB", 1000),
    ("1kb", 1000),
    ("2MB", 2 * 10**6),
    ("1GB", 10**9),
    ("1KiB", 1024),
    ("256MiB", 256 << 20),
    ("1gib", 1 << 30),
    ("1.5KiB", 1536),
    ("3 MiB", 3 << 20),
]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_duration_notations(tmp_path, text, seconds):
    assert c.parse_duration(text) == seconds
    assert c.load({"POLL_INTERVAL": text}).storage.poll_interval == seconds
    path = write(tmp_path, f"storage:\n  poll_interval: {text.strip()}\n")
    assert c.load({}, config_file=path).storage.poll_interval == seconds


@pytest.mark.parametrize(("text", "size"), SIZES)
def test_size_notations(tmp_path, text, size):
    assert c.parse_size(text) == size
    assert c.load({"CACHE_BYTES": text}).storage.cache_bytes == size
    path = write(tmp_path, f"storage:\n  cache_bytes: {text.strip()}\n")
    assert c.load({}, config_file=path).storage.cache_bytes == size


@pytest.mark.parametrize("text", ["30x", "-1s", "1 week", "s", "1.s", "", "1M", "1e3"])
def test_bad_durations_name_variable_and_value(text):
    (problem,) = problems({"RETRY_ATTEMPTS": "1", "STORAGE_TIMEOUT": text or " "})
    assert problem.startswith(f"STORAGE_TIMEOUT={text or ' '!r}: not a duration")


@pytest.mark.parametrize("text", ["1.5", "1.5B", "12XB", "-5", "1TB", "MiB", "k"])
def test_bad_sizes_name_variable_and_value(text):
    (problem,) = problems({"CACHE_BYTES": text})
    assert problem.startswith(f"CACHE_BYTES={text!r}: not a")


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2**40), st.integers(0, 10**7))
def test_formats_read_back(size, millis):
    assert c.parse_size(c.format_size(size)) == size
    assert c.parse_duration(c.format_duration(millis / 1000)) == millis / 1000


@pytest.mark.parametrize(
    ("canonical", "alias", "value", "other"),
    [
        ("SERVER_PORT", "PORT", "6000", "6001"),
        ("STORAGE_TYPE", "ARCHIVE_STORAGE_TYPE", "FS", "S3"),
        ("BUCKET_NAME", "ARCHIVE_BUCKET_NAME", "lake-a", "lake-b"),
    ],
)
def test_alias_conflicts_name_both(canonical, alias, value, other):
    (problem,) = problems({canonical: value, alias: other})
    assert f"{canonical}={value!r}" in problem and f"{alias}={other!r}" in problem


def test_alias_agreeing_is_fine():
    cfg = c.load(
        {
            "SERVER_PORT": "6000",
            "PORT": " 6000",
            "STORAGE_TYPE": "s3",
            "ARCHIVE_STORAGE_TYPE": "S3",
            "BUCKET_NAME": "x",
            "ARCHIVE_BUCKET_NAME": "x",
        }
    )
    assert (cfg.server.port, cfg.storage.type, cfg.storage.bucket_name) == (6000, "S3", "x")


def test_every_problem_at_once(tmp_path):
    path = write(tmp_path, "server:\n  port: seventy\n  colour: blue\n")
    found = problems(
        {
            "CONFIG_FILE": path,
            "HEALTH_PORT": "70000",
            "STORAGE_MAX_INFLIGHT": "0",
            "LOG_LEVEL": "loud",
            "VERIFY_HASH_CHAIN": "maybe",
            "READAHEAD_BYTES": "0",
            "SERVER_HOST": " ",
            "STORAGE_TYPE": "S3",
            "ARCHIVE_STORAGE_TYPE": "gcs",
        }
    )
    assert len(found) == 10, found
    text = "\n".join(found)
    for needle in [
        "unknown key server.colour",
        f"server.port='seventy' in {path} (SERVER_PORT): not a valid integer",
        "STORAGE_TYPE='S3' and its alias ARCHIVE_STORAGE_TYPE='gcs' disagree",
        "HEALTH_PORT='70000': must be between 0 and 65535",
        "STORAGE_MAX_INFLIGHT='0': must be at least 1",
        "LOG_LEVEL='loud': must be one of debug, info, warning, error",
        "VERIFY_HASH_CHAIN='maybe': not a valid boolean",
        "READAHEAD_BYTES='0': must be at least 1",
        "SERVER_HOST=' ': must not be empty",
        "STORAGE_TYPE=S3 needs BUCKET_NAME",
    ]:
        assert needle in text


def test_bad_yaml_value_names_key_file_and_variable(tmp_path):
    path = write(tmp_path, "server:\n  port: seventy\n")
    (problem,) = problems(config_file=path)
    assert problem == f"server.port='seventy' in {path} (SERVER_PORT): not a valid integer"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("servr:\n  port: 1\n", "unknown section 'servr'"),
        ("server:\n  prot: 1\n", "unknown key server.prot"),
        ("server: 5\n", "server must be a mapping"),
        ("server:\n  port: [1, 2]\n", "server.port must be a single value"),
        ("- a\n- b\n", "must be a mapping of sections"),
        ("server:\n  port: 1\n bad indent: [\n", "not valid YAML"),
    ],
)
def test_yaml_structure_problems(tmp_path, text, needle):
    (problem,) = problems(config_file=write(tmp_path, text))
    assert needle in problem


def test_missing_yaml_file(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    (problem,) = problems({"CONFIG_FILE": missing})
    assert problem.startswith(f"CONFIG_FILE={missing!r}: cannot read it")


def test_hash_chain_fallback_needs_verification():
    (problem,) = problems({"XDR_UNKNOWN_ARMS": "hash-chain", "VERIFY_HASH_CHAIN": "false"})
    assert "XDR_UNKNOWN_ARMS=hash-chain needs VERIFY_HASH_CHAIN=true" in problem
    assert c.load({"XDR_UNKNOWN_ARMS": "Hash-Chain"}).stream.xdr_unknown_arms == "hash-chain"


@pytest.mark.parametrize("kind", ["S3", "GCS"])
def test_cloud_storage_needs_a_bucket(kind):
    (problem,) = problems({"STORAGE_TYPE": kind})
    assert problem.startswith(f"STORAGE_TYPE={kind} needs BUCKET_NAME")
    cfg = c.load({"STORAGE_TYPE": kind, "BUCKET_NAME": "lake"})
    assert not cfg.storage.uses_sample_lake
    assert not c.load({"BUCKET_NAME": "/srv/lake"}).storage.uses_sample_lake


def test_listeners_need_their_own_ports():
    (problem,) = problems({"HEALTH_PORT": "9090"})
    assert "HEALTH_PORT and METRICS_PORT are both 9090" in problem
    assert c.load({"HEALTH_PORT": "9090", "METRICS_ENABLED": "false"}).server.health_port == 9090


def test_retry_backoff_is_within_its_cap():
    (problem,) = problems({"RETRY_BACKOFF": "31s"})
    assert problem.startswith("RETRY_BACKOFF=31s is above the 30s cap")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_files_load_and_read_back(path):
    cfg = c.load({}, config_file=str(path))
    assert c.load(c.as_env(cfg)) == cfg


def test_shipped_files_show_every_setting():
    import yaml

    assert {p.name for p in SHIPPED} == {"development.yaml", "production.yaml"}
    for path in SHIPPED:
        doc = yaml.safe_load(path.read_text())
        keys = {f"{sec}.{key}" for sec, body in doc.items() for key in (body or {})}
        assert keys == {s.yaml_key for s in c.SETTINGS}, path.name
        assert set(doc) == set(c.SECTIONS)
    dev = c.load({}, config_file=str(ROOT / "config" / "development.yaml"))
    assert dev.storage.uses_sample_lake and dev.monitoring.log_level == "debug"
    assert dev.server.host == "127.0.0.1"
    prod = c.load({}, config_file=str(ROOT / "config" / "production.yaml"))
    assert (prod.storage.type, prod.server.host) == ("S3", "0.0.0.0") and prod.storage.bucket_name


def test_config_validate_prints_every_setting(capsys):
    from stellar_live_source import cli

    assert cli.main(["config", "validate"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == c.describe(c.load()) and err == ""


def test_config_validate_reports_every_problem_and_exits_2(capsys, tmp_path, monkeypatch):
    from stellar_live_source import cli

    path = write(tmp_path, "server:\n  prot: 1\n")
    monkeypatch.setenv("STORAGE_MAX_INFLIGHT", "none")
    assert cli.main(["config", "validate", "--config", path]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == "stellar-live-source config validate: invalid configuration (2 problems):"
    assert len(lines) == 3 and "unknown key server.prot" in err and "STORAGE_MAX_INFLIGHT='none'" in err


def test_ports_may_be_zero_and_listeners_switched_off_need_no_port():
    cfg = c.load({"SERVER_PORT": "0", "HEALTH_PORT": "0", "METRICS_PORT": "0"})
    assert (cfg.server.port, cfg.server.health_port, cfg.monitoring.metrics_port) == (0, 0, 0)
    assert c.load({"HEALTH_PORT": "50052", "HEALTH_ENABLED": "false"}).server.health_enabled is False
    (problem,) = problems({"HEALTH_PORT": "50052"})
    assert "SERVER_PORT and HEALTH_PORT are both 50052" in problem


# -- removed settings: accepted with a warning naming the replacement, and ignored --

RETIRED = [
    ("BUFFER_SIZE", "storage.buffer_size", "READAHEAD_BYTES"),
    ("NUM_WORKERS", "storage.num_workers", "READAHEAD_BYTES"),
    ("STORAGE_POOL_SIZE", "storage.pool_size", "STORAGE_MAX_INFLIGHT"),
]


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "stellar_live_source.config"]


def test_the_retired_table_is_no_setting():
    assert [(r.env, r.yaml_key, r.instead) for r in c.RETIRED] == RETIRED
    live = {s.env for s in c.SETTINGS} | {a for s in c.SETTINGS for a in s.aliases} | {s.yaml_key for s in c.SETTINGS}
    assert not live & {n for r in RETIRED for n in r[:2]}
    assert {replacement for *_, replacement in RETIRED} <= {s.env for s in c.SETTINGS}


@pytest.mark.parametrize(("name", "yaml_key", "instead"), RETIRED, ids=[r[0] for r in RETIRED])
@pytest.mark.parametrize("value", ["16", "0", "lots", "-1"])
def test_a_retired_setting_is_ignored_with_one_warning_naming_its_replacement(
    caplog, tmp_path, name, yaml_key, instead, value
):
    section, key = yaml_key.split(".")
    path = write(tmp_path, f"{section}:\n  {key}: {value}\n")
    for environ, config_file, where in [
        ({name: value}, None, f"{name}={value!r}"),
        ({}, path, f"{yaml_key}={value!r} in {path} ({name})"),
        ({name: value}, path, f"{name}={value!r}"),  # both layers: one warning, for the one that wins
    ]:
        caplog.clear()
        assert c.load(environ, config_file=config_file) == c.load({})  # no problem, and no effect
        (warning,) = warnings_of(caplog)
        assert warning.startswith(f"{where} is ignored: the setting was removed") and warning.endswith(f"use {instead}")
        assert caplog.records[0].levelname == "WARNING"


def test_no_warning_when_no_retired_setting_is_named(caplog):
    c.load({"BUFFER_SIZE": "", "READAHEAD_BYTES": "1MiB"})  # empty counts as unset
    assert warnings_of(caplog) == []


def test_retired_settings_warn_even_beside_problems(caplog):
    (problem,) = problems({"NUM_WORKERS": "8", "STORAGE_MAX_INFLIGHT": "0"})
    assert problem == "STORAGE_MAX_INFLIGHT='0': must be at least 1"
    assert len(warnings_of(caplog)) == 1


def test_config_validate_mentions_ignored_settings_on_stderr():
    """Through the real command: the warning reaches stderr (no logging is set
    up there, so Python's last-resort handler prints it); stdout is unchanged."""
    import subprocess
    import sys

    env = {"PATH": "", "BUFFER_SIZE": "4", "STORAGE_POOL_SIZE": "8"}
    out = subprocess.run(
        [sys.executable, "-m", "stellar_live_source.cli", "config", "validate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == c.describe(c.load({}))
    lines = out.stderr.splitlines()
    assert len(lines) == 2, out.stderr
    assert lines[0].startswith("BUFFER_SIZE='4' is ignored") and lines[0].endswith("use READAHEAD_BYTES")
    assert lines[1].startswith("STORAGE_POOL_SIZE='8' is ignored") and lines[1].endswith("use STORAGE_MAX_INFLIGHT")


def test_http_headers_from_yaml_and_environment_are_masked_when_described(tmp_path):
    path = write(
        tmp_path,
        "storage:\n  type: HTTP\n  http_base_url: https://lake.example/pubnet\n"
        "  http_headers:\n    Authorization: Bearer from-yaml\n    X-Trace: abc\n",
    )
    cfg = c.load({"HTTP_HEADER_AUTHORIZATION": "Bearer from-env", "HTTP_HEADER_X_API_KEY": "k1"}, config_file=path)
    # The environment's header wins over the YAML's of the same name (names compare without case).
    assert cfg.storage.http_headers == (
        ("Authorization", "Bearer from-env"),
        ("X-Api-Key", "k1"),
        ("X-Trace", "abc"),
    )
    lines = c.describe(cfg)
    assert "HTTP_HEADER_AUTHORIZATION=****" in lines and "HTTP_HEADER_X_API_KEY=****" in lines
    assert not any("from-env" in line or "k1" in line for line in lines)
    assert c.load(c.as_env(cfg)) == cfg  # the unmasked form reads back


@pytest.mark.parametrize(
    ("yaml_text", "env", "needle"),
    [
        ("storage:\n  http_headers: [a, b]\n", {}, "must be a mapping of header names to values"),
        ("storage:\n  http_headers:\n    'bad name': x\n", {}, "is not an HTTP header name"),
        ("", {"STORAGE_TYPE": "HTTP"}, "STORAGE_TYPE=HTTP needs HTTP_BASE_URL"),
        ("", {"STORAGE_TYPE": "HTTP", "HTTP_BASE_URL": "ftp://x"}, "http:// or https:// URL"),
        ("", {"FLOWCTL_API": "v2"}, "must be one of v1, legacy"),
    ],
)
def test_bad_http_and_flowctl_settings_are_refused(tmp_path, yaml_text, env, needle):
    with pytest.raises(c.ConfigError, match=re.escape(needle)):
        c.load(env, config_file=write(tmp_path, yaml_text) if yaml_text else "")
