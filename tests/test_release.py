"""Release engineering: the GitHub workflows are valid workflows that do what
the README says (tests on every Python, wheels and sdist on tags, trusted
publishing, the image, the audit, the SBOM), and the hash-locked requirements
cover the runtime dependencies."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from .support.tools import ROOT, run

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def workflow(name: str) -> dict:
    doc = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def steps(doc: dict, job: str) -> list[dict]:
    return doc["jobs"][job]["steps"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_are_valid(path):
    run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", path)


def test_ci_runs_lint_and_the_tests_on_every_python():
    ci = workflow("ci.yml")
    assert ci["jobs"]["test"]["strategy"]["matrix"]["python"] == ["3.11", "3.12", "3.13", "3.14"]
    assert any(s.get("run") == "make lint" for s in steps(ci, "lint"))
    assert any("make test" in s.get("run", "") for s in steps(ci, "test"))
    audit = " ".join(s.get("run", "") for s in steps(ci, "audit"))
    assert "pip-audit" in audit and "--require-hashes -r requirements.lock" in audit


def test_release_builds_wheels_sdist_and_sbom_and_publishes_by_trusted_publishing():
    rel = workflow("release.yml")
    assert rel["on"] == {"push": {"tags": ["v*"]}}
    assert any(s.get("uses", "").startswith("pypa/cibuildwheel@") for s in steps(rel, "wheels"))
    assert any("build --sdist" in s.get("run", "") for s in steps(rel, "sdist"))
    assert any("cyclonedx-py environment" in s.get("run", "") for s in steps(rel, "sbom"))
    publish = rel["jobs"]["publish"]
    assert publish["permissions"]["id-token"] == "write"  # OIDC: no token stored anywhere
    upload = [s for s in publish["steps"] if s.get("uses", "").startswith("pypa/gh-action-pypi-publish@")]
    assert upload and "password" not in upload[0].get("with", {})
    assert any("gh release create" in s.get("run", "") for s in publish["steps"])


def test_image_workflow_pins_the_base_by_digest_and_passes_the_version():
    image = workflow("image.yml")
    build = next(s for s in steps(image, "image") if s.get("uses", "").startswith("docker/build-push-action@"))
    args = dict(line.strip().split("=", 1) for line in build["with"]["build-args"].splitlines() if line.strip())
    dockerfile = (ROOT / "Dockerfile").read_text()
    declared = set(re.findall(r"^ARG (\w+)", dockerfile, re.M))
    assert {"PYTHON_TAG", "PYTHON_DIGEST", "VERSION"} <= args.keys() <= declared  # only ARGs the Dockerfile has
    tag = re.search(r"^ARG PYTHON_TAG=(\S+)", dockerfile, re.M)
    assert tag is not None and image["env"]["PYTHON_TAG"] == tag[1]  # the same base the Dockerfile pins


def test_the_lock_pins_every_runtime_dependency_with_hashes():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}
    text = (ROOT / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\]+) \\$", text, re.M))
    assert names <= {n.lower().replace("_", "-") for n in pinned}, names - set(pinned)
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text.split("\n\n", 1)[-1])
    assert all("--hash=sha256:" in b for b in blocks if "==" in b)
    assert "file://" not in text and "--extra-index-url" not in text  # nothing of this machine


def test_the_changelog_follows_keep_a_changelog():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n") and "keepachangelog.com/en/1.1.0" in text
    versions = re.findall(r"^## (.+)$", text, re.M)
    assert versions and versions[0] == "[Unreleased]"
    for v in versions[1:]:  # released versions: [X.Y.Z] - YYYY-MM-DD
        assert re.fullmatch(r"\[\d+\.\d+\.\d+\] - \d{4}-\d{2}-\d{2}", v), v
    kinds = re.findall(r"^### (.+)$", text, re.M)
    assert set(kinds) <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}, kinds
    for v in versions:  # each heading has its link reference
        label = v.split(" - ")[0]
        assert re.search(rf"^{re.escape(label)}: https://", text, re.M), label
