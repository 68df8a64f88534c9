# One image for both services, so an edge and a projector of one release always agree on the
# event schema. Default command: the edge; the projector is `python -m projector` (see
# compose/docker-compose.yml and docs/deploy.md). Nothing secret is ever baked in: secrets come
# at run time, as environment variables or as files /run/secrets/TRACKER_* (Docker secrets).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/tracker
WORKDIR /src
# The pinned runtime dependencies first, read from pyproject.toml alone: a code change then
# reuses this layer instead of downloading every wheel again. Extras (the embedded local
# stack, dev tools, bench) stay out of the image.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && /opt/tracker/bin/pip install --no-cache-dir --requirement requirements.txt
# Everything .dockerignore lets through: the packages pyproject.toml lists, whatever they are.
COPY . .
RUN /opt/tracker/bin/pip install --no-cache-dir --no-deps .

FROM ${PYTHON_IMAGE}
# A fixed, unprivileged uid: secret files and volumes can be granted to it by number.
RUN groupadd --system --gid 10001 tracker \
    && useradd --system --uid 10001 --gid tracker --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin tracker \
    && mkdir -p /var/spool/tracker \
    && chown tracker:tracker /var/spool/tracker
COPY --from=build /opt/tracker /opt/tracker
# Inside a container the services must listen on every interface (their defaults are loopback
# for the local stack); the spool goes where a volume is mounted.
ENV PATH=/opt/tracker/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TRACKER_EDGE_HOST=0.0.0.0 \
    TRACKER_PROJECTOR_HOST=0.0.0.0 \
    TRACKER_EDGE_SPOOL_DIR=/var/spool/tracker
WORKDIR /opt/tracker
USER 10001:10001
EXPOSE 8080 8081
# Liveness, not readiness: /healthz answers while the process serves. /readyz is 503 while the
# broker is away (edge) or a partition waits for an operator (projector); restarting would cure
# neither and would interrupt the edge's spooling, so load balancers and alerts use /readyz.
# Tries the edge's port (HTTP, then HTTPS when started with --tls-cert), then the projector's.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, ssl, sys, urllib.request\nports = (os.environ.get('TRACKER_EDGE_PORT') or '8080', os.environ.get('TRACKER_PROJECTOR_PORT') or '8081')\ncontext = ssl._create_unverified_context()\nfor port in ports:\n    for scheme in ('http', 'https'):\n        try:\n            with urllib.request.urlopen(f'{scheme}://127.0.0.1:{port}/healthz', timeout=2, context=context) as answer:\n                sys.exit(0 if answer.status == 200 else 1)\n        except Exception:\n            pass\nsys.exit(1)"]
# Docker (or Kubernetes) secrets mounted as /run/secrets/TRACKER_<NAME> become the variable
# TRACKER_<NAME> (trailing newlines dropped): the settings read only the environment, and this
# keeps secret values out of `docker inspect` and of the compose file.
ENTRYPOINT ["/bin/sh", "-c", "for f in /run/secrets/TRACKER_*; do if [ -f \"$f\" ]; then export \"${f##*/}=$(cat \"$f\")\"; fi; done; exec \"$@\"", "tracker-entrypoint"]
CMD ["python", "-m", "ingest", "serve"]
