"""Delivery (issue 16): the image's Dockerfiles, the Kubernetes objects
(kustomize overlays and the Helm chart), the local stack's compose file.

Each check runs the real tool (hadolint, kubectl kustomize, helm,
kubernetes-validate, check-jsonschema; tests/support/tools.py finds them) on
the committed files. What none of them can do here (build the image, apply
to a cluster, run Tilt) is listed in the README's "Deploying"."""

from __future__ import annotations

import http.server
import json
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stellar_live_source.ops import config as settings
from tests.support.tools import ROOT, run, tool

K8S_VERSION = "1.33.0"
OVERLAYS = ("dev", "prod")
CHART = ROOT / "charts" / "stellar-live-source"
PROD_VALUES = CHART / "values-prod.yaml"
SERVICE_MONITOR_SCHEMA = ROOT / "tests" / "schemas" / "servicemonitor-v1.json"
# Added by helm and not by kustomize: dropped before the two are compared.
HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version")
MEMORY_SETTINGS = ("CACHE_BYTES", "MAX_CONCURRENT_STREAMS", "READAHEAD_BYTES", "MAX_OBJECT_BYTES", "DECODE_WORKERS")
# docs/capacity.md: the process at rest, and per stream.
BASELINE_BYTES = 60_000_000
PER_STREAM_BYTES = 250_000


# -- helpers -------------------------------------------------------------------------------------


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def of_kind(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str = "stellar-live-source") -> dict[str, Any]:
    found = of_kind(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


_rendered: dict[tuple[str, ...], str] = {}


def kustomize(overlay: str) -> str:
    key = ("kustomize", overlay)
    if key not in _rendered:
        _rendered[key] = run("kubectl", "kustomize", ROOT / "k8s" / "overlays" / overlay).stdout
    return _rendered[key]


def helm(*args: str) -> str:
    key = ("helm", *args)
    if key not in _rendered:
        _rendered[key] = run("helm", "template", "stellar-live-source", CHART, *args).stdout
    return _rendered[key]


RENDERINGS = {
    "kustomize dev": lambda: kustomize("dev"),
    "kustomize prod": lambda: kustomize("prod"),
    "helm defaults": lambda: helm(),
    "helm prod values": lambda: helm("-f", str(PROD_VALUES)),
    "helm tls only": lambda: helm("--set", "tls.enabled=true"),
}


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (c,) = [c for c in pod["containers"] if c["name"] == "stellar-live-source"]
    return c


def effective_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The service's environment as rendered: the ConfigMaps named by envFrom,
    then the literal env entries (later wins, as in the kubelet)."""
    c = container(objects)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
    return env


def effective_config(objects: list[dict[str, Any]], tmp_path: Path) -> settings.Config:
    """The configuration the pod would run with: the mounted ConfigMap file
    named by CONFIG_FILE, overridden by the environment; loaded by the
    service's own loader (so a bad value fails here as it would at start)."""
    env = effective_env(objects)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    config_file = Path(env["CONFIG_FILE"])
    (mount,) = [m for m in container(objects)["volumeMounts"] if m["mountPath"] == str(config_file.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    data = one(objects, "ConfigMap", volume["configMap"]["name"])["data"]
    path = tmp_path / config_file.name
    path.write_text(data[config_file.name])
    return settings.load({k: v for k, v in env.items() if k != "CONFIG_FILE"}, config_file=str(path))


def memory_bound(cfg: settings.Config) -> int:
    """docs/capacity.md: CACHE_BYTES + streams x (READAHEAD_BYTES + largest
    object) + DECODE_WORKERS x largest object + baseline + per stream."""
    streams = cfg.server.max_concurrent_streams
    largest = cfg.storage.max_object_bytes
    return (
        cfg.storage.cache_bytes
        + streams * (cfg.storage.readahead_bytes + largest)
        + cfg.stream.decode_workers * largest
        + BASELINE_BYTES
        + streams * PER_STREAM_BYTES
    )


_QUANTITY = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def quantity_bytes(q: str | int) -> int:
    m = re.fullmatch(r"([0-9]+)(|k|M|G|Ki|Mi|Gi)", str(q))
    assert m, f"unexpected memory quantity {q!r}"
    return int(m[1]) * _QUANTITY[m[2]]


def seconds(text: str) -> float:
    return settings.parse_duration(text)


def validate(text: str, tmp_path: Path, name: str) -> list[dict[str, Any]]:
    """kubernetes-validate (strict, Kubernetes pinned) on every object; the
    ServiceMonitor against the vendored subset of its CRD's schema. A
    built-in kind without a schema fails (the tool only warns)."""
    import jsonschema  # type: ignore[import-untyped]  # openapi-core's dependency; no stubs installed

    objects = docs(text)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    out = run("kubernetes-validate", "--strict", "-k", K8S_VERSION, path)
    passed = set(re.findall(r"passed for resource (\S+) against version", out.stdout + out.stderr))
    schema = json.loads(SERVICE_MONITOR_SCHEMA.read_text())
    for o in objects:
        ref = f"{o['kind'].lower()}/{o['metadata']['name']}"
        if o["apiVersion"] == "monitoring.coreos.com/v1":
            jsonschema.validate(o, schema)
        else:
            assert ref in passed, f"{ref} was not validated by kubernetes-validate:\n{out.stdout}{out.stderr}"
    return objects


# -- image ---------------------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = [[]]
    for ins in instructions(path):
        if ins[0] == "FROM":
            result.append([])
        result[-1].append(ins)
    return result  # result[0]: the ARGs before the first FROM


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.dev"])
def test_hadolint(dockerfile: str) -> None:
    run("hadolint", ROOT / dockerfile)


def test_dockerfile_properties() -> None:
    pre, *build, final = stages(ROOT / "Dockerfile")
    assert build, "a build stage and a final stage"
    args = {a.partition("=")[0]: a.partition("=")[2] for w, a in pre if w == "ARG"}
    # The base image: an exact tag (x.y.z-variant) and a digest the workflow fills.
    assert re.fullmatch(r"3\.\d+\.\d+-slim-\w+", args["PYTHON_TAG"]), args
    assert "PYTHON_DIGEST" in args
    for stage in (*build, final):
        assert stage[0][1].startswith("python:${PYTHON_TAG}${PYTHON_DIGEST:+@${PYTHON_DIGEST}}"), stage[0]
    # The version: a build argument feeding setuptools-scm.
    build_text = " ".join(a for _, a in build[-1])
    assert ("ARG", "VERSION=0.0.0+unknown") in build[-1]
    assert 'SETUPTOOLS_SCM_PRETEND_VERSION="${VERSION}"' in build_text
    # No wheel in any layer of the final image: no pip, no wheel, only the venv copied.
    final_text = " ".join(f"{w} {a}" for w, a in final)
    assert "pip " not in final_text and "wheel" not in final_text.lower()
    copies = [a for w, a in final if w == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv", "config /etc/stellar-live-source"], copies
    assert "pip wheel" not in build_text
    labels = " ".join(a for w, a in final if w == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert "org.opencontainers.image.source=" in labels
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels
    assert ("STOPSIGNAL", "SIGTERM") in final
    (user,) = [a for w, a in final if w == "USER"]
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0"
    env = " ".join(a for w, a in final if w == "ENV")
    assert 'CONFIG_FILE=""' in env and "HEALTH_PORT=8088" in env
    (check,) = [a for w, a in final if w == "HEALTHCHECK"]
    assert "--start-period=" in check
    assert "HEALTH_PORT" in check and "TLS_ENABLED" in check and "127.0.0.1:8088" not in check


def test_dockerfile_dev_properties() -> None:
    _, final = stages(ROOT / "Dockerfile.dev")
    text = " ".join(f"{w} {a}" for w, a in final)
    assert "pip install -e" in text
    assert ("STOPSIGNAL", "SIGTERM") in final
    assert re.match(r"python:3\.\d+\.\d+-slim-\w+$", final[0][1])


def healthcheck_command(dockerfile: str) -> list[str]:
    (check,) = [a for w, a in stages(ROOT / dockerfile)[-1] if w == "HEALTHCHECK"]
    command = json.loads(check[check.index("CMD") + 3 :].strip())
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


@pytest.fixture
def health_server() -> Iterator[tuple[int, dict[str, int]]]:
    state = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the handler's name)
            self.send_response(state["status"] if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], state
    finally:
        server.shutdown()


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.dev"])
def test_healthcheck_uses_health_port(dockerfile: str, health_server: tuple[int, dict[str, int]]) -> None:
    """The health check, run as written, on HEALTH_PORT: healthy on 200,
    unhealthy on 503 and on a port nothing listens on."""
    port, state = health_server
    command = healthcheck_command(dockerfile)

    def check(health_port: int) -> int:
        env = {"HEALTH_PORT": str(health_port), "PATH": "/usr/bin:/bin"}
        return subprocess.run(command, env=env, capture_output=True, timeout=10, check=False).returncode

    assert check(port) == 0
    state["status"] = 503
    assert check(port) != 0
    state["status"] = 200
    server_less = port + 1 if port < 65535 else port - 1
    assert check(server_less) != 0


def test_healthcheck_speaks_https_with_tls(tmp_path: Path) -> None:
    """TLS_ENABLED=true: the health listener serves HTTPS, and so must the check."""
    import ssl

    from tests import tls_support

    ca = tls_support.make_ca()
    leaf = tls_support.issue(ca, "localhost")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(leaf.cert_pem)
    key.write_bytes(leaf.key_pem)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"HEALTH_PORT": str(server.server_address[1]), "PATH": "/usr/bin:/bin"}
        command = healthcheck_command("Dockerfile")
        plain = subprocess.run(command, env=env, capture_output=True, timeout=10, check=False)
        assert plain.returncode != 0  # HTTP against an HTTPS listener
        tls = subprocess.run(command, env={**env, "TLS_ENABLED": "true"}, capture_output=True, timeout=10, check=False)
        assert tls.returncode == 0, tls.stderr
    finally:
        server.shutdown()


def test_dockerignore_keeps_only_the_build_inputs() -> None:
    lines = [x.strip() for x in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [x for x in lines if x and not x.startswith("#")]
    assert patterns[0] == "**", "everything is excluded first"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied: set[str] = set()
    for dockerfile in ("Dockerfile", "Dockerfile.dev"):
        for word, args in instructions(ROOT / dockerfile):
            if word == "COPY" and not args.startswith("--from"):
                copied.update(shlex.split(args)[:-1])
    assert copied <= included, copied - included
    for never in (".git", ".venv", ".tools", "tests", "build", "dist"):
        assert never not in included


# -- Kubernetes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_objects_validate(name: str, tmp_path: Path) -> None:
    objects = validate(RENDERINGS[name](), tmp_path, name.replace(" ", "-"))
    kinds = {o["kind"] for o in objects}
    expected = {"ServiceAccount", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"}
    expected |= {"PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"}
    assert expected <= kinds, expected - kinds


def test_validation_is_strict(tmp_path: Path) -> None:
    """The validation used above refuses an unknown field (else it proves nothing)."""
    objects = docs(kustomize("prod"))
    one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    out = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0 and "livenesProbe" in out.stdout + out.stderr


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_pod_hardening_probes_and_shutdown(name: str, tmp_path: Path) -> None:
    objects = docs(RENDERINGS[name]())
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    c = container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    cfg = effective_config(objects, tmp_path)
    scheme = "HTTPS" if cfg.security.tls_enabled else "HTTP"
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "health", "scheme": scheme}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "health", "scheme": scheme}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": cfg.server.port, "health": cfg.server.health_port, "metrics": cfg.monitoring.metrics_port}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(cfg.monitoring.metrics_port)
    assert annotations["prometheus.io/scheme"] == scheme.lower()
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["scheme"] == scheme.lower()
    # preStop, then the drain: the grace period covers both, with room to exit.
    pre_stop = float(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + cfg.server.graceful_shutdown_timeout
    # POD_IP from the downward API: flowctl's advertise host.
    (pod_ip,) = [e for e in c["env"] if e["name"] == "POD_IP"]
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_secrets_are_files_never_env(name: str, tmp_path: Path) -> None:
    objects = docs(RENDERINGS[name]())
    cfg = effective_config(objects, tmp_path)
    c = container(objects)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert not [e for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    secret_mounts = {
        m["mountPath"] for m in c["volumeMounts"] for v in pod["volumes"] if v["name"] == m["name"] and "secret" in v
    }
    files = [cfg.security.tls_cert_path, cfg.security.tls_key_path] if cfg.security.tls_enabled else []
    files += [cfg.security.api_keys_file] if cfg.security.api_key_required else []
    for f in files:
        assert str(Path(f).parent) in secret_mounts, f"{f} is not on a mounted Secret"
    if name.endswith("prod") or "prod" in name:
        assert cfg.security.tls_enabled and cfg.security.api_key_required


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_memory_limit_covers_the_bound(overlay: str, tmp_path: Path) -> None:
    """The limit is at least the service's memory bound (docs/capacity.md),
    computed from the rendered ConfigMap and environment; every setting of
    the bound is set in the overlay itself, below the default's bound."""
    objects = docs(kustomize(overlay))
    cfg = effective_config(objects, tmp_path)
    resources = container(objects)["resources"]
    limit = quantity_bytes(resources["limits"]["memory"])
    bound = memory_bound(cfg)
    assert limit >= bound, f"{overlay}: memory limit {limit} < bound {bound}"
    assert quantity_bytes(resources["requests"]["memory"]) <= limit
    kustomization = yaml.safe_load((ROOT / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text())
    literals = {
        lit.split("=", 1)[0] for gen in kustomization.get("configMapGenerator", []) for lit in gen.get("literals", [])
    }
    assert set(MEMORY_SETTINGS) <= literals, set(MEMORY_SETTINGS) - literals
    defaults = settings.defaults()
    assert bound < memory_bound(defaults)
    assert cfg.storage.cache_bytes <= defaults.storage.cache_bytes
    assert cfg.storage.readahead_bytes <= defaults.storage.readahead_bytes
    assert cfg.storage.max_object_bytes <= defaults.storage.max_object_bytes
    assert cfg.server.max_concurrent_streams <= defaults.server.max_concurrent_streams


def test_memory_bound_check_fails_below_the_bound(tmp_path: Path) -> None:
    """One more stream than the prod limit was sized for goes over it."""
    objects = docs(kustomize("prod"))
    cfg = effective_config(objects, tmp_path)
    env = one(objects, "ConfigMap", container(objects)["envFrom"][0]["configMapRef"]["name"])["data"]
    env["MAX_CONCURRENT_STREAMS"] = str(cfg.server.max_concurrent_streams * 2)
    limit = quantity_bytes(container(objects)["resources"]["limits"]["memory"])
    assert memory_bound(effective_config(objects, tmp_path)) > limit


def test_config_copies_match_config_production() -> None:
    source = (ROOT / "config" / "production.yaml").read_text()
    assert (ROOT / "k8s" / "base" / "production.yaml").read_text() == source, "cp config/production.yaml k8s/base/"
    assert (CHART / "files" / "production.yaml").read_text() == source, (
        "cp config/production.yaml charts/stellar-live-source/files/"
    )


def test_prod_overlay_topology_and_scaling() -> None:
    objects = docs(kustomize("prod"))
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    zone = [t for t in spread if t["topologyKey"] == "topology.kubernetes.io/zone"]
    assert zone and zone[0]["whenUnsatisfiable"] == "DoNotSchedule"
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 3
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "stellar_live_source_streams_active"
    metrics_source = (ROOT / "pysrc" / "stellar_live_source" / "ops" / "metrics.py").read_text()
    assert 'f"{PREFIX}_streams_active"' in metrics_source and 'PREFIX = "stellar_live_source"' in metrics_source
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_service_and_network_policy(name: str) -> None:
    objects = docs(RENDERINGS[name]())
    service = one(objects, "Service")
    assert service["spec"]["clusterIP"] == "None", "headless: per-call balancing in the client"
    assert {p["name"] for p in service["spec"]["ports"]} == {"grpc", "health", "metrics"}
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    by_port = {r["ports"][0]["port"]: r["from"] for r in policy["ingress"]}
    assert set(by_port) == {"grpc", "metrics"}, "nothing but gRPC and metrics comes in"
    assert by_port["grpc"][0]["podSelector"]["matchLabels"], "gRPC from labelled consumers only"
    assert by_port["metrics"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    egress_ports = {(p["port"], p.get("protocol")) for r in policy["egress"] for p in r["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (443, "TCP")} <= egress_ports


# -- Helm ----------------------------------------------------------------------------------------


def test_helm_lint() -> None:
    run("helm", "lint", "--strict", CHART)
    run("helm", "lint", "--strict", CHART, "-f", PROD_VALUES)


def test_values_schema_refuses_bad_values() -> None:
    for bad in ("ports.grpc=0", "tls.enabled=maybe", "settings.SERVER_PORT=1", "image.pullPolicy=Sometimes", "nope=1"):
        out = subprocess.run(
            [tool("helm"), "template", "x", str(CHART), "--set", bad],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode != 0 and "schema" in out.stderr.lower(), (bad, out.stderr)


def leaves(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        if isinstance(value, dict) and value and key not in ("settings", "clientPodLabels", "resources"):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_every_value_is_documented() -> None:
    """Each value has a comment in values.yaml and a row in the chart's README."""
    text = (CHART / "values.yaml").read_text()
    readme = (CHART / "README.md").read_text()
    lines = text.splitlines()
    for path in leaves(yaml.safe_load(text)):
        *parents, last = path.split(".")
        assert f"`{path}`" in readme or (f"`{parents[0]}." in readme and f"{last}`" in readme), path
        (index,) = [i for i, line in enumerate(lines) if re.match(rf"\s*{re.escape(last)}:", line)][-1:]
        # Commented itself, or a group commented as a whole (ports:).
        indent = len(lines[index]) - len(lines[index].lstrip())
        parent = next((j for j in range(index - 1, -1, -1) if len(lines[j]) - len(lines[j].lstrip()) < indent), None)
        commented = [index] + ([parent] if parent is not None and parents else [])
        assert any(lines[i - 1].strip().startswith("#") for i in commented), f"{path} has no comment in values.yaml"


def test_helm_tls_probes_use_https() -> None:
    plain = container(docs(helm()))
    tls = container(docs(helm("--set", "tls.enabled=true")))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert plain[probe]["httpGet"]["scheme"] == "HTTP"
        assert tls[probe]["httpGet"]["scheme"] == "HTTPS"


def normalise(objects: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """Objects by (kind, name), without what only one tool adds: helm's
    labels and config checksum, kustomize's hash suffix on generated names."""
    generated = {
        o["metadata"]["name"]: re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"])
        for o in objects
        if o["kind"] in ("ConfigMap", "Secret")
    }

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if k in HELM_LABELS or k.startswith("checksum/"):
                    continue
                out[k] = clean(v)
            return out
        if isinstance(value, list):
            items = [clean(v) for v in value]
            if items and all(isinstance(v, dict) and "name" in v for v in items):
                # Volumes, mounts, ports, env: kustomize's patches put theirs first.
                items.sort(key=lambda v: str(v["name"]))
            return items
        if isinstance(value, str):
            return generated.get(value, value)
        return value

    def untagged(o: dict[str, Any]) -> dict[str, Any]:
        # The image's tag is the release's: the overlay's `images:` and the chart's image.tag.
        for c in o.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            c["image"] = c["image"].rsplit(":", 1)[0]
        return o

    return {(o["kind"], clean(o["metadata"]["name"])): untagged(clean(o)) for o in objects}


def test_chart_renders_what_the_prod_overlay_renders() -> None:
    chart = normalise(docs(helm("-f", str(PROD_VALUES))))
    overlay = normalise(docs(kustomize("prod")))
    assert sorted(chart) == sorted(overlay)
    for key in overlay:
        assert chart[key] == overlay[key], f"{key} differs between the chart and k8s/overlays/prod"


def test_chart_defaults_match_the_base() -> None:
    """The chart's defaults render the base's objects (the overlays' common ground)."""
    chart = normalise(docs(helm()))
    base = normalise(docs(run("kubectl", "kustomize", ROOT / "k8s" / "base").stdout))
    assert sorted(chart) == sorted(base)
    for key in base:
        assert chart[key] == base[key], f"{key} differs between the chart's defaults and k8s/base"


# -- local stack ---------------------------------------------------------------------------------


def test_compose_file() -> None:
    path = ROOT / "docker-compose.dev.yml"
    run("check-jsonschema", "--builtin-schema", "vendor.compose-spec", path)
    compose = yaml.safe_load(path.read_text())
    services = compose["services"]
    service = services["stellar-live-source"]
    assert service["build"]["dockerfile"] == "Dockerfile.dev"
    assert ".:/src" in service["volumes"]
    env = service["environment"]
    cfg = settings.load(
        {k: str(v) for k, v in env.items() if k != "CONFIG_FILE"},
        config_file=str(ROOT / env["CONFIG_FILE"].removeprefix("/src/")),
    )
    assert seconds(service["stop_grace_period"]) > cfg.server.graceful_shutdown_timeout
    assert cfg.monitoring.tracing_enabled and env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://jaeger:")
    assert cfg.storage.type == "S3" and "lake:9000" in cfg.storage.endpoint
    assert services["seed-lake"]["depends_on"]["lake"]["condition"] == "service_healthy"
    assert service["depends_on"]["seed-lake"]["condition"] == "service_completed_successfully"
    prometheus = compose["configs"]["prometheus"]["content"]
    assert "/etc/prometheus/rules/alerts.yaml" in prometheus and "/etc/prometheus/rules/recording.yaml" in prometheus
    assert "stellar-live-source:9090" in prometheus
    # The rules select job="stellar-live-source"; the ServiceMonitor's job is the Service's name.
    assert "job_name: stellar-live-source" in prometheus
    assert "./monitoring:/etc/prometheus/rules:ro" in services["prometheus"]["volumes"]
    grafana = services["grafana"]["volumes"]
    assert "./monitoring/grafana:/var/lib/grafana/dashboards/stellar-live-source:ro" in grafana
    assert "./monitoring/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
