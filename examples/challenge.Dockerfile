# A challenge's image: the runner image with the challenge's wheel installed.
# Build it in the challenge's project, after `pip wheel --no-deps . -w dist`:
#   docker build -f challenge.Dockerfile --build-arg RUNNER_IMAGE=<runner image> \
#     -t ghcr.io/<owner>/<challenge>:<version> .
# docs/operating.md tells the rest.
ARG RUNNER_IMAGE=ghcr.io/base-runner/base-runner:0.2.0
FROM ${RUNNER_IMAGE}
# The runner's venv belongs to root, so that the service's uid cannot change
# its own code; install as root, then hand the image back to uid 1000.
USER 0
# A bind mount, not COPY: the wheel is read at build time and never stored in a layer.
RUN --mount=type=bind,source=dist,target=/tmp/dist \
    pip install --no-cache-dir /tmp/dist/*.whl
USER 1000:1000
