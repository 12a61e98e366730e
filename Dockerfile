# The base-runner image: one generic runner; a challenge is added as a wheel.
# docs/operating.md tells how to add a challenge and how BASE deploys it.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY . .
# The venv is all the final stage takes: the sources, the wheel and pip's
# build tree stay behind in this stage.
RUN python3 -m pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels . \
    && python3 -m venv /opt/base-runner \
    && /opt/base-runner/bin/pip install --no-cache-dir /tmp/wheels/base_runner-*.whl
# Wheels under wheels/ in the build context, or requirement specs, separated
# by spaces: a challenge installed next to the runner in the same build.
ARG CHALLENGE_PACKAGES=""
# The unquoted expansion is the point: each word is one package for pip.
# hadolint ignore=SC2086
RUN if [ -n "$CHALLENGE_PACKAGES" ]; then \
        /opt/base-runner/bin/pip install --no-cache-dir $CHALLENGE_PACKAGES; \
    fi

FROM ${BASE_IMAGE}
# /data is the challenge's volume: Docker copies this folder, owner included,
# into a new empty named volume, so uid 1000 can write there from the first
# start. HOME is /data too, so a library that writes under ~ works on a
# read-only root.
RUN useradd --uid 1000 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin appuser \
    && mkdir -p /data/tmp \
    && chown -R 1000:1000 /data
# Owned by root: the service's uid cannot rewrite the code it runs.
COPY --from=build /opt/base-runner /opt/base-runner
ENV PATH=/opt/base-runner/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CHALLENGE_HOST=0.0.0.0 \
    CHALLENGE_PORT=8000 \
    CHALLENGE_DATA_DIR=/data \
    TMPDIR=/data/tmp
USER 1000:1000
WORKDIR /data
EXPOSE 8000
# The standard library only: the slim base has no curl, and importing nothing
# of the runner's keeps a check every 30 s cheap. Liveness is the HTTP status
# (503 only once the process must be restarted), as the 3.1 master's own
# Swarm probe reads it: a body that says "not ready" (schema drift) is no
# reason to restart, which would cure nothing.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('CHALLENGE_PORT', '8000'), timeout=4)"]
# Exec form: the runner is PID 1 and gets SIGTERM itself, no shell in between.
CMD ["base-runner", "serve"]
