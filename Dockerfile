# Two stages: build the wheel (compiled core, vendored zstd) with a compiler,
# run it on a slim image without one.
FROM python:3.12-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md CHANGELOG.md ./
COPY ext ext
COPY pysrc pysrc
COPY proto proto
RUN pip wheel -w /wheels .

FROM python:3.12-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels stellar-live-source-datalake && rm -rf /wheels \
    && useradd --system --uid 10001 app
COPY config /etc/stellar-live-source
USER 10001
# gRPC, HTTP health, Prometheus metrics
EXPOSE 50052 8088 9090
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8088/health', timeout=2).status != 200)"
ENTRYPOINT ["stellar-live-source"]
# With no configuration it serves the embedded sample lake; set CONFIG_FILE or
# the environment (STORAGE_TYPE, BUCKET_NAME, ...) for a real one.
CMD ["serve"]
