# Minimal image until the delivery work: builds the wheel with the compiled
# core in one stage and installs it into a slim runtime.
FROM python:3.12-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md CHANGELOG.md ./
COPY ext ext
COPY pysrc pysrc
RUN pip wheel --no-deps -w /wheels .

FROM python:3.12-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
RUN useradd --system --uid 10001 app
USER app
ENTRYPOINT ["stellar-live-source"]
CMD ["inspect"]
