"""The service's configuration: one typed tree, 12-factor style.

Layers, later wins: built-in defaults < the YAML file named by ``CONFIG_FILE``
(or ``config_file=``) < environment variables. Each setting has a YAML key
``section.key`` and a canonical environment name; a few also accept the Go
original's name as an alias. Every layer's text goes through the same environs
parsers, and every problem found is raised together in one ``ConfigError``.
A removed setting (``RETIRED``) is no problem: it is ignored, with a warning
naming what does its job now, so a configuration written for an older
release still loads.
An empty environment variable counts as unset, so a blank ``NAME=`` left in a
compose file does not override the YAML.

Durations are floats in seconds, written ``500ms``, ``30s``, ``1m``, ``1h`` or
as plain seconds. Sizes are ints in bytes, written plain or with a unit (case
does not matter): B, KB/MB/GB (powers of 1000), KiB/MiB/GiB (powers of 1024).

Sentinel: ``storage.type == "FS"`` with ``storage.bucket_name == ""`` means the
sample lake embedded in the package (``stellar_live_source.parts.SAMPLE_LAKE``);
S3 and GCS need a bucket.
"""

import functools
import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from typing import Any, TypeVar, cast

import yaml
from environs import Env, EnvError, EnvValidationError

from ..core.decode import UNKNOWN_ARMS
from ..errors import ConfigError

_T = TypeVar("_T")

log = logging.getLogger("stellar_live_source.config")

STORAGE_TYPES = ("FS", "S3", "GCS", "HTTP")
FLOWCTL_APIS = ("v1", "legacy")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")
RETRY_BACKOFF_CAP = 30.0  # seconds; the doubling of RETRY_BACKOFF stops here
# Extra HTTP request headers come from every environment variable named so
# (HTTP_HEADER_X_API_KEY=... is the header X-Api-Key), as the Go SDK takes them.
HEADER_PREFIX = "HTTP_HEADER_"
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
MASK = "****"  # what describe() shows for a secret value


@dataclass(frozen=True, slots=True)
class Setting:
    """How one field is written: environment name(s), kind, default, bounds."""

    env: str
    kind: str  # str, int, bool, duration, size, choice or headers (a mapping)
    default: str  # in the notation a user writes
    aliases: tuple[str, ...] = ()
    low: float | None = None  # inclusive bounds
    high: float | None = None
    choices: tuple[str, ...] = ()
    required: bool = False  # strings: empty is refused
    # How a change applies on reload (SIGHUP, a watched file): "live" at once,
    # open streams included; "new-streams" to calls that start after it;
    # "restart" not without one (a reload that changes it is refused whole).
    reload: str = "restart"
    section: str = ""  # filled in from the tree below
    key: str = ""

    @property
    def yaml_key(self) -> str:
        return f"{self.section}.{self.key}"


RELOAD_CLASSES = ("live", "new-streams", "restart")


def _opt(env: str, kind: str, default: str, *, reload: str, **bounds: Any) -> Any:
    """One setting; ``reload`` (one of RELOAD_CLASSES) is required, so that no setting lacks one."""
    if reload not in RELOAD_CLASSES:
        raise ValueError(f"{env}: reload class {reload!r} is not one of {RELOAD_CLASSES}")
    bounds["reload"] = reload
    if kind in ("int", "size"):
        bounds.setdefault("low", 1)
    elif kind == "duration":
        bounds.setdefault("low", 0.001)  # zero would mean busy loops or no waiting at all
    return field(metadata={"setting": Setting(env, kind, default, **bounds)})


def _port(env: str, default: str, **kw: Any) -> Any:
    return _opt(env, "int", default, low=0, high=65535, **kw)  # 0: any free port


# The tree. Field names are the YAML keys; _opt declares the rest.


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = _opt("SERVER_HOST", "str", "0.0.0.0", required=True, reload="restart")
    port: int = _port("SERVER_PORT", "50052", aliases=("PORT",), reload="restart")
    health_enabled: bool = _opt("HEALTH_ENABLED", "bool", "true", reload="restart")
    health_port: int = _port("HEALTH_PORT", "8088", reload="restart")
    graceful_shutdown_timeout: float = _opt("GRACEFUL_SHUTDOWN_TIMEOUT", "duration", "30s", low=0, reload="live")
    max_concurrent_streams: int = _opt("MAX_CONCURRENT_STREAMS", "int", "100", reload="new-streams")


@dataclass(frozen=True, slots=True)
class StorageConfig:
    type: str = _opt(
        "STORAGE_TYPE", "choice", "FS", choices=STORAGE_TYPES, aliases=("ARCHIVE_STORAGE_TYPE",), reload="restart"
    )
    bucket_name: str = _opt("BUCKET_NAME", "str", "", aliases=("ARCHIVE_BUCKET_NAME",), reload="restart")
    path: str = _opt("ARCHIVE_PATH", "str", "", reload="restart")
    region: str = _opt("AWS_REGION", "str", "", reload="restart")
    endpoint: str = _opt("S3_ENDPOINT_URL", "str", "", reload="restart")
    force_path_style: bool = _opt("S3_FORCE_PATH_STYLE", "bool", "false", reload="restart")
    anonymous: bool = _opt("S3_ANONYMOUS", "bool", "false", reload="restart")
    http_base_url: str = _opt("HTTP_BASE_URL", "str", "", reload="restart")
    # header name -> value, sorted by name; written as a YAML mapping or HTTP_HEADER_<NAME> variables
    http_headers: tuple[tuple[str, str], ...] = _opt(f"{HEADER_PREFIX}<NAME>", "headers", "", reload="restart")
    # a ledger an HTTP lake holds, where the search for its ends starts (0: ledger 2, then powers of two)
    http_search_from: int = _opt("HTTP_SEARCH_FROM", "int", "0", low=0, high=0xFFFFFFFF, reload="restart")
    manifest_path: str = _opt("MANIFEST_PATH", "str", ".config.json", required=True, reload="restart")
    network_passphrase: str = _opt("NETWORK_PASSPHRASE", "str", "", reload="restart")
    ledgers_per_file: int = _opt("LEDGERS_PER_FILE", "int", "64", reload="restart")
    files_per_partition: int = _opt("FILES_PER_PARTITION", "int", "10", reload="restart")
    timeout: float = _opt("STORAGE_TIMEOUT", "duration", "30s", reload="restart")
    max_inflight: int = _opt("STORAGE_MAX_INFLIGHT", "int", "128", reload="restart")
    retry_attempts: int = _opt("RETRY_ATTEMPTS", "int", "5", reload="live")
    retry_backoff: float = _opt("RETRY_BACKOFF", "duration", "1s", reload="live")
    readahead_bytes: int = _opt("READAHEAD_BYTES", "size", "64MiB", reload="new-streams")
    poll_interval: float = _opt("POLL_INTERVAL", "duration", "1s", reload="live")
    cache_bytes: int = _opt("CACHE_BYTES", "size", "256MiB", reload="restart")
    max_object_bytes: int = _opt("MAX_OBJECT_BYTES", "size", "512MiB", reload="restart")
    missing_object_wait: float = _opt("MISSING_OBJECT_WAIT", "duration", "60s", low=0, reload="new-streams")

    @property
    def uses_sample_lake(self) -> bool:
        return self.type == "FS" and self.bucket_name == ""


@dataclass(frozen=True, slots=True)
class StreamConfig:
    verify_hash_chain: bool = _opt("VERIFY_HASH_CHAIN", "bool", "true", reload="restart")
    xdr_unknown_arms: str = _opt("XDR_UNKNOWN_ARMS", "choice", "error", choices=UNKNOWN_ARMS, reload="restart")
    range_max_ledgers: int = _opt("RANGE_MAX_LEDGERS", "int", "100", reload="new-streams")
    range_max_bytes: int = _opt("RANGE_MAX_BYTES", "size", "64MiB", reload="new-streams")
    decode_workers: int = _opt("DECODE_WORKERS", "int", "2", reload="restart")


@dataclass(frozen=True, slots=True)
class MonitoringConfig:
    metrics_enabled: bool = _opt("METRICS_ENABLED", "bool", "true", reload="restart")
    metrics_port: int = _port("METRICS_PORT", "9090", reload="restart")
    log_level: str = _opt("LOG_LEVEL", "choice", "info", choices=LOG_LEVELS, reload="live")
    log_format: str = _opt("LOG_FORMAT", "choice", "json", choices=LOG_FORMATS, reload="restart")
    log_progress_ledgers: int = _opt("LOG_PROGRESS_LEDGERS", "int", "10000", reload="new-streams")
    tracing_enabled: bool = _opt("TRACING_ENABLED", "bool", "false", reload="restart")
    slo_availability: float = _opt("SLO_AVAILABILITY", "float", "0.999", low=0.0, high=1.0, reload="live")
    slo_window: float = _opt("SLO_WINDOW", "duration", "1h", reload="restart")


@dataclass(frozen=True, slots=True)
class FlowctlConfig:
    enabled: bool = _opt("ENABLE_FLOWCTL", "bool", "false", reload="restart")
    endpoint: str = _opt("FLOWCTL_ENDPOINT", "str", "localhost:8080", required=True, reload="restart")
    heartbeat_interval: float = _opt("FLOWCTL_HEARTBEAT_INTERVAL", "duration", "10s", reload="restart")
    api: str = _opt("FLOWCTL_API", "choice", "v1", choices=FLOWCTL_APIS, reload="restart")
    # Empty: POD_IP when set, else the host name (0.0.0.0 is not dialable).
    advertise_host: str = _opt("FLOWCTL_ADVERTISE_HOST", "str", "", reload="restart")
    component_id: str = _opt("FLOWCTL_COMPONENT_ID", "str", "", reload="restart")
    service_id: str = _opt("FLOWCTL_SERVICE_ID", "str", "", reload="restart")
    # Comma-separated; the Go original's type by default, so existing pipelines match.
    output_event_types: str = _opt(
        "FLOWCTL_OUTPUT_EVENT_TYPES", "str", "raw_ledger_service.RawLedgerChunk", required=True, reload="restart"
    )


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """Who may connect: TLS (mutual with a client CA) and API keys."""

    tls_enabled: bool = _opt("TLS_ENABLED", "bool", "false", reload="restart")
    tls_cert_path: str = _opt("TLS_CERT_PATH", "str", "", reload="live")
    tls_key_path: str = _opt("TLS_KEY_PATH", "str", "", reload="live")
    tls_client_ca_path: str = _opt("TLS_CLIENT_CA_PATH", "str", "", reload="live")
    api_key_required: bool = _opt("API_KEY_REQUIRED", "bool", "false", reload="new-streams")
    api_keys_file: str = _opt("API_KEYS_FILE", "str", "", reload="live")
    allow_insecure_api_keys: bool = _opt("ALLOW_INSECURE_API_KEYS", "bool", "false", reload="new-streams")


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """What one client, one stream and all ranges together may take (0: no limit)."""

    max_streams_per_client: int = _opt("MAX_STREAMS_PER_CLIENT", "int", "0", low=0, reload="new-streams")
    rate_limit_rps: float = _opt("RATE_LIMIT_RPS", "float", "0", low=0, reload="new-streams")
    rate_limit_burst: int = _opt("RATE_LIMIT_BURST", "int", "20", reload="new-streams")
    max_ledgers_per_second_per_stream: int = _opt(
        "MAX_LEDGERS_PER_SECOND_PER_STREAM", "int", "0", low=0, reload="new-streams"
    )
    range_inflight_bytes: int = _opt("RANGE_INFLIGHT_BYTES", "size", "256MiB", reload="new-streams")
    max_start_ahead_ledgers: int = _opt("MAX_START_AHEAD_LEDGERS", "int", "17280", low=0, reload="new-streams")


@dataclass(frozen=True, slots=True)
class ResilienceConfig:
    """The storage circuit breaker."""

    breaker_failure_threshold: int = _opt("BREAKER_FAILURE_THRESHOLD", "int", "5", reload="live")
    breaker_reset_timeout: float = _opt("BREAKER_RESET_TIMEOUT", "duration", "30s", reload="live")


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    storage: StorageConfig
    stream: StreamConfig
    monitoring: MonitoringConfig
    flowctl: FlowctlConfig
    security: SecurityConfig
    limits: LimitsConfig
    resilience: ResilienceConfig
    #: environment names the operator set (in YAML or the environment), as
    #: opposed to defaults: a lake manifest may only be contradicted by these
    explicit: frozenset[str] = field(default=frozenset(), compare=False)


# section name -> its dataclass (each a different one: type[Any] to the type checker)
SECTIONS = {f.name: cast("type[Any]", f.type) for f in fields(Config) if f.name != "explicit"}
SETTINGS: tuple[Setting, ...] = tuple(
    replace(f.metadata["setting"], section=name, key=f.name) for name, cls in SECTIONS.items() for f in fields(cls)
)
_BY_YAML_KEY = {s.yaml_key: s for s in SETTINGS}


@dataclass(frozen=True, slots=True)
class Retired:
    """A removed setting: a configuration that names it still loads, with a
    warning naming what does its job now, and the value is ignored (not even
    checked)."""

    env: str
    yaml_key: str
    instead: str
    why: str


RETIRED = (
    Retired("BUFFER_SIZE", "storage.buffer_size", "READAHEAD_BYTES", "read-ahead is bounded by bytes, not objects"),
    Retired(
        "NUM_WORKERS",
        "storage.num_workers",
        "READAHEAD_BYTES",
        "read-ahead is bounded by bytes; reads at once by STORAGE_MAX_INFLIGHT, for the whole lake",
    ),
    Retired(
        "STORAGE_POOL_SIZE",
        "storage.pool_size",
        "STORAGE_MAX_INFLIGHT",
        "the storage clients' connection pools and the folder's read pool are sized by the reads in flight",
    ),
)
_RETIRED_BY_YAML_KEY = {r.yaml_key: r for r in RETIRED}


# Notations.

_DURATION_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
_SIZE_UNITS = {"GiB": 2**30, "GB": 10**9, "MiB": 2**20, "MB": 10**6, "KiB": 2**10, "KB": 10**3, "B": 1}
_SIZE_BY_LOWER = {u.lower(): f for u, f in _SIZE_UNITS.items()} | {"": 1}


def parse_duration(text: str) -> float:
    """``500ms``, ``30s``, ``1m``, ``1h``, ``1.5s`` or plain seconds, as seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?", text.strip())
    if not m:
        raise ValueError("not a duration (write e.g. 500ms, 30s, 1m, 1h or plain seconds)")
    return float(Decimal(m[1]) * _DURATION_UNITS[m[2] or "s"])


def parse_size(text: str) -> int:
    """Bytes, plain or with a unit: B, KB, MB, GB, KiB, MiB, GiB (any case)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)", text.strip())
    factor = _SIZE_BY_LOWER.get(m[2].lower()) if m else None
    if m is None or factor is None:
        raise ValueError("not a size (write bytes, or e.g. 64KiB, 256MiB, 1GB)")
    n = Decimal(m[1]) * factor
    if n != n.to_integral_value():
        raise ValueError("not a whole number of bytes")
    return int(n)


def parse_headers(text: str) -> tuple[tuple[str, str], ...]:
    """Header lines ``Name: value`` (the text form of a headers setting), as
    sorted ``(name, value)`` pairs; names are tokens, values one line each."""
    out: dict[str, tuple[str, str]] = {}
    for line in text.split("\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not an HTTP header name")
        if "\r" in value or "\x00" in value:
            raise ValueError(f"the value of header {name} holds a control character")
        out[name.lower()] = (name, value)
    return tuple(sorted(out.values(), key=lambda nv: nv[0].lower()))


def header_env(name: str) -> str:
    """The environment variable that sets header ``name``: X-Api-Key -> HTTP_HEADER_X_API_KEY."""
    return HEADER_PREFIX + name.upper().replace("-", "_")


def _header_name(env: str) -> str:
    """The header an HTTP_HEADER_ variable sets: HTTP_HEADER_X_API_KEY -> X-Api-Key."""
    return "-".join(part.capitalize() for part in env[len(HEADER_PREFIX) :].split("_"))


def format_duration(seconds: float) -> str:
    """The largest unit that writes ``seconds`` exactly; parse_duration reads it back."""
    d = Decimal(repr(seconds))
    if d == 0:
        return "0s"
    for unit in ("h", "m", "s", "ms"):
        q = d / _DURATION_UNITS[unit]
        if q == q.to_integral_value():
            return f"{int(q)}{unit}"
    return f"{d.normalize():f}s"


def format_size(n: int) -> str:
    """The largest unit that writes ``n`` exactly; parse_size reads it back."""
    for unit, factor in _SIZE_UNITS.items():
        if n and n % factor == 0 and unit != "B":
            return f"{n // factor}{unit}"
    return str(n)


def _format(s: Setting, value: Any) -> str:
    if s.kind == "headers":
        return "\n".join(f"{name}: {v}" for name, v in value)
    if s.kind == "bool":
        return "true" if value else "false"
    if s.kind == "duration":
        return format_duration(value)
    if s.kind == "size":
        return format_size(value)
    return str(value)


# Loading.


class _MappingEnv(Env):
    """environs over one mapping instead of os.environ, so that load() sees
    exactly the layers it merged (and tests need not touch os.environ)."""

    def __init__(self, values: Mapping[str, str]):
        super().__init__(eager=False)  # collect every error, raise at seal()
        self._mapping = values
        self.add_parser("duration", _for_environs(parse_duration))
        self.add_parser("size", _for_environs(parse_size))
        self.add_parser("headers", _for_environs(parse_headers))

    def _get_value(self, env_key: str, default: Any) -> Any:  # environs' lookup hook
        return self._mapping.get(env_key, default)


def _for_environs(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    def parser(text: str) -> _T:
        try:
            return parse(text)
        except ValueError as e:  # environs collects only its own errors
            raise EnvError(str(e)) from None

    return parser


@functools.cache
def defaults() -> Config:
    """Every setting at its default: where commands take their own defaults from."""
    return load({})


def load(environ: Mapping[str, str] | None = None, *, config_file: str | None = None) -> Config:
    """The configuration from defaults, the YAML file and ``environ``
    (default ``os.environ``); raises ConfigError listing every problem."""
    environ = os.environ if environ is None else environ
    path = config_file if config_file is not None else environ.get("CONFIG_FILE", "")
    raw = {s.env: s.default for s in SETTINGS}
    origin: dict[str, str] = {}  # env name -> what the user wrote, for messages
    retired: dict[str, str] = {}  # retired settings named: env name -> what the user wrote
    problems = _read_yaml(path, raw, origin, retired) if path else []
    problems += _read_environ(environ, raw, origin, retired)
    for r in RETIRED:
        if r.env in retired:
            log.warning("%s is ignored: the setting was removed (%s); use %s", retired[r.env], r.why, r.instead)

    env = _MappingEnv(raw)
    parsed = {s.env: getattr(env, "str" if s.kind == "choice" else s.kind)(s.env) for s in SETTINGS}
    try:
        env.seal()
        errors: Mapping[str, list[str]] = {}
    except EnvValidationError as e:
        errors = cast("Mapping[str, list[str]]", e.error_messages)  # seal() reports them by variable
    values: dict[str, Any] = {}
    for s in SETTINGS:
        label = origin.get(s.env, f"{s.env}={raw[s.env]!r}")
        if s.env in errors:
            problems.append(f"{label}: {_sentence(errors[s.env])}")
            continue
        value, why = _check(s, parsed[s.env])
        if why:
            problems.append(f"{label}: {why}")
        else:
            values[s.env] = value
    problems += _cross_check(values)
    if problems:
        raise ConfigError(problems)

    by_section: dict[str, dict[str, Any]] = defaultdict(dict)
    for s in SETTINGS:
        by_section[s.section][s.key] = values[s.env]
    return Config(**{name: cls(**by_section[name]) for name, cls in SECTIONS.items()}, explicit=frozenset(origin))


def _read_yaml(path: str, raw: dict[str, str], origin: dict[str, str], retired: dict[str, str]) -> list[str]:
    try:
        with open(path, "rb") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        return [f"CONFIG_FILE={path!r}: cannot read it ({e.strerror})"]
    except yaml.YAMLError as e:
        return [f"CONFIG_FILE={path!r}: not valid YAML: {' '.join(str(e).split())}"]
    if doc is None:
        return []
    if not isinstance(doc, dict):
        return [f"{path}: must be a mapping of sections ({', '.join(SECTIONS)})"]
    problems = []
    for section, body in doc.items():
        if section not in SECTIONS:
            problems.append(f"{path}: unknown section {section!r} (known: {', '.join(SECTIONS)})")
            continue
        if body is None:
            continue
        if not isinstance(body, dict):
            problems.append(f"{path}: {section} must be a mapping of settings")
            continue
        for key, value in body.items():
            s = _BY_YAML_KEY.get(f"{section}.{key}")
            gone = _RETIRED_BY_YAML_KEY.get(f"{section}.{key}")
            if gone is not None:
                retired[gone.env] = f"{gone.yaml_key}={_yaml_text(value)!r} in {path} ({gone.env})"
            elif s is None:
                problems.append(f"{path}: unknown key {section}.{key}")
            elif s.kind == "headers":
                if not isinstance(value, dict) and value is not None:
                    problems.append(f"{path}: {section}.{key} must be a mapping of header names to values")
                    continue
                text = "\n".join(f"{k}: {_yaml_text(v)}" for k, v in (value or {}).items())
                raw[s.env] = text
                origin[s.env] = f"{s.yaml_key} in {path}"
            elif isinstance(value, (dict, list)):
                problems.append(f"{path}: {section}.{key} must be a single value")
            else:
                text = _yaml_text(value)
                raw[s.env] = text
                origin[s.env] = f"{s.yaml_key}={text!r} in {path} ({s.env})"
    return problems


def _yaml_text(value: Any) -> str:
    """A YAML scalar as the text an environment variable would hold."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _read_environ(
    environ: Mapping[str, str], raw: dict[str, str], origin: dict[str, str], retired: dict[str, str]
) -> list[str]:
    retired.update((r.env, f"{r.env}={environ[r.env]!r}") for r in RETIRED if environ.get(r.env, "") != "")
    problems = []
    for s in SETTINGS:
        if s.kind == "headers":  # one variable per header, each over the YAML's header of that name
            given = {k: v for k, v in environ.items() if k.startswith(HEADER_PREFIX) and k != HEADER_PREFIX and v != ""}
            if given:
                lines = raw[s.env].split("\n") if raw[s.env] else []
                lines += [f"{_header_name(k)}: {v}" for k, v in sorted(given.items())]
                raw[s.env] = "\n".join(lines)
                origin[s.env] = " and ".join(([origin[s.env]] if s.env in origin else []) + [", ".join(sorted(given))])
            continue
        names = [n for n in (s.env, *s.aliases) if environ.get(n, "") != ""]
        if not names:
            continue
        first = names[0]
        for other in names[1:]:
            if _normal(s, environ[first]) != _normal(s, environ[other]):
                problems.append(
                    f"{first}={environ[first]!r} and its alias {other}={environ[other]!r} disagree: "
                    "unset one, or give both the same value"
                )
        raw[s.env] = environ[first]
        origin[s.env] = f"{first}={environ[first]!r}" + (f" (alias of {s.env})" if first != s.env else "")
    return problems


def _normal(s: Setting, text: str) -> Any:
    """Comparable form of an alias's value: ``PORT=50052`` agrees with ``SERVER_PORT= 50052``."""
    text = text.strip()
    try:
        normalizers: dict[str, Callable[[str], Any]] = {"int": int, "choice": str.lower}
        return normalizers.get(s.kind, str)(text)
    except ValueError:
        return text


def _sentence(messages: Any) -> str:
    text = "; ".join(map(str, messages)) if isinstance(messages, list) else str(messages)
    return text[:1].lower() + text[1:].rstrip(".")


def _check(s: Setting, value: Any) -> tuple[Any, str | None]:
    """The value normalised, or why it is out of bounds."""
    if isinstance(value, str):
        value = value.strip()
    if s.required and value == "":
        return None, "must not be empty"
    if s.choices:
        match = {c.lower(): c for c in s.choices}.get(value.lower())
        return (match, None) if match else (None, f"must be one of {', '.join(s.choices)}")
    if s.low is not None and value < s.low or s.high is not None and value > s.high:
        if s.high is not None:
            return None, f"must be between {_format(s, s.low)} and {_format(s, s.high)}"
        return None, f"must be at least {_format(s, s.low)}"
    return value, None


def _cross_check(v: Mapping[str, Any]) -> list[str]:
    """Rules across settings; each runs only when its inputs are valid."""
    problems = []
    if v.get("STORAGE_TYPE") == "HTTP" and not re.match(r"https?://[^/]", v.get("HTTP_BASE_URL", "x")):
        problems.append(
            f"STORAGE_TYPE=HTTP needs HTTP_BASE_URL as an http:// or https:// URL, not {v['HTTP_BASE_URL']!r}"
        )
    if v.get("STORAGE_TYPE") in ("S3", "GCS") and v.get("BUCKET_NAME") == "":
        problems.append(
            f"STORAGE_TYPE={v['STORAGE_TYPE']} needs BUCKET_NAME "
            "(only FS may leave it empty, meaning the embedded sample lake)"
        )
    if v.get("XDR_UNKNOWN_ARMS") == "hash-chain" and v.get("VERIFY_HASH_CHAIN") is False:
        problems.append(
            "XDR_UNKNOWN_ARMS=hash-chain needs VERIFY_HASH_CHAIN=true "
            "(the fallback finds ledger boundaries by the hash chain)"
        )
    if v.get("RETRY_BACKOFF", 0) > RETRY_BACKOFF_CAP:
        problems.append(
            f"RETRY_BACKOFF={format_duration(v['RETRY_BACKOFF'])} is above "
            f"the {format_duration(RETRY_BACKOFF_CAP)} cap its doubling stops at"
        )
    if v.get("API_KEY_REQUIRED") and v.get("TLS_ENABLED") is False and v.get("ALLOW_INSECURE_API_KEYS") is False:
        problems.append(
            "API_KEY_REQUIRED=true with TLS_ENABLED=false would send keys in clear: enable TLS, "
            "or set ALLOW_INSECURE_API_KEYS=true (loopback, or a mesh that terminates TLS)"
        )
    if v.get("TLS_ENABLED"):
        missing = [name for name in ("TLS_CERT_PATH", "TLS_KEY_PATH") if v.get(name) == ""]
        if missing:
            problems.append(f"TLS_ENABLED=true needs {' and '.join(missing)}")
    listeners = ["SERVER_PORT"] + [
        port for port, on in (("HEALTH_PORT", "HEALTH_ENABLED"), ("METRICS_PORT", "METRICS_ENABLED")) if v.get(on)
    ]
    taken: dict[int, str] = {}
    for name in listeners:
        port = v.get(name)
        if port == 0:  # any free port: the kernel never hands out one twice
            continue
        if port in taken:
            problems.append(f"{taken[port]} and {name} are both {port}: each listener needs its own port")
        elif port is not None:
            taken[port] = name
    return problems


# Output.


def text_of(config: Config, s: Setting) -> str:
    """One setting's value as the text a user writes (headers: ``Name: value`` lines)."""
    return _format(s, getattr(getattr(config, s.section), s.key))


def as_env(config: Config, *, mask: bool = False) -> dict[str, str]:
    """Every setting under its canonical environment name; load() reads it
    back. Headers are one variable each (their values ``MASK``ed with ``mask``)."""
    out: dict[str, str] = {}
    for s in SETTINGS:
        value = getattr(getattr(config, s.section), s.key)
        if s.kind == "headers":
            out.update((header_env(name), MASK if mask else v) for name, v in value)
        else:
            out[s.env] = _format(s, value)
    return out


def describe(config: Config) -> list[str]:
    """One ``NAME=value`` line per setting, for logs and ``config validate``;
    header values (credentials, often) are masked."""
    return [f"{name}={value}" for name, value in as_env(config, mask=True).items()]
