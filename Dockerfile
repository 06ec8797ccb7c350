# One image for the three services (scheduler, monitor, restore); compose gives each its command.
#   docker build -t permafrost .                                   # PostgreSQL 13 to 18
#   docker build --build-arg PG_MAJORS="16 17" -t permafrost .      # only the majors you run
# Offline, with no registry, no PostgreSQL apt repository and no PyPI (scripts/containers.py):
#   docker build --build-arg BASE_IMAGE=debian:bookworm-slim --build-arg PG_SOURCE=debian \
#                --build-arg PG_MAJORS=15 -t permafrost .   # wheels in wheelhouse/, from pip wheel
# Build arguments:
#   BASE_IMAGE    python:3.11-slim-bookworm; or debian:bookworm-slim, then Debian's python3 (3.11)
#   PG_SOURCE     pgdg: the PostgreSQL project's apt repository (every major);
#                 debian: Debian's own packages (bookworm ships only PostgreSQL 15)
#   PG_MAJORS     the PostgreSQL majors installed side by side
#   EXTRA_REQUIREMENTS  more Python packages (the container test's stand-ins); empty for users
#   VERSION, REVISION   the image labels org.opencontainers.image.version and .revision
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- build: the wheel and its dependencies, in a virtual environment -------------------------
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN set -eu; \
    if ! python3 -c 'import ensurepip' 2>/dev/null; then \
        apt-get update; apt-get install -y --no-install-recommends python3 python3-venv; \
        rm -rf /var/lib/apt/lists/*; fi; \
    python3 -m venv /opt/permafrost
COPY pyproject.toml README.md /src/
COPY permafrost /src/permafrost
COPY scheduler /src/scheduler
COPY monitor /src/monitor
COPY restore /src/restore
# wheelhouse/ with wheels in it: install from those alone (an air-gapped build); empty: PyPI.
COPY wheelhouse /wheelhouse
ARG EXTRA_REQUIREMENTS=""
RUN set -eu; \
    source=""; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then source="--no-index --find-links /wheelhouse"; fi; \
    set -f; /opt/permafrost/bin/pip install $source /src $EXTRA_REQUIREMENTS

# --- runtime: PostgreSQL client and server binaries of PG_MAJORS, the venv, a non-root user --
FROM ${BASE_IMAGE} AS runtime
# Every major listed is installed side by side under /usr/lib/postgresql/N/bin; Permafrost picks
# the programs of each server's own major (README: "Supported PostgreSQL versions").
ARG PG_MAJORS="13 14 15 16 17 18"
ARG PG_SOURCE=pgdg
ENV PG_MAJORS=${PG_MAJORS} \
    PATH=/opt/permafrost/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WAL_SPOOL_DIR=/var/lib/permafrost/wal-spool \
    RESTORE_TMPDIR=/var/lib/permafrost/tmp
# The server binaries are needed for point-in-time recovery in the restore container; Debian
# itself ships one major version, so by default they come from the PostgreSQL project's apt
# repository. Each major adds about 60 MB (postgresql-15 and postgresql-client-15: 61 MB).
RUN set -eu; \
    apt-get update; \
    python=""; python3 -c '' 2>/dev/null || python=python3; \
    apt-get install -y --no-install-recommends ca-certificates curl zstd $python; \
    case "${PG_SOURCE}" in \
    pgdg) \
        apt-get install -y --no-install-recommends gnupg; \
        install -d /usr/share/postgresql-common/pgdg; \
        curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
            https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
        echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
            > /etc/apt/sources.list.d/pgdg.list; \
        apt-get update;; \
    debian) ;; \
    *) echo "PG_SOURCE=${PG_SOURCE}: use pgdg (the PostgreSQL project's apt repository) or debian" >&2; exit 1;; \
    esac; \
    mkdir -p /etc/postgresql-common/createcluster.d; \
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/permafrost.conf; \
    packages=""; for major in ${PG_MAJORS}; do \
        if ! apt-cache show "postgresql-${major}" >/dev/null 2>&1; then \
            echo "PostgreSQL ${major} is not in PG_SOURCE=${PG_SOURCE} (Debian bookworm has 15 only): set PG_MAJORS to what it has, or PG_SOURCE=pgdg" >&2; \
            exit 1; fi; \
        packages="$packages postgresql-${major} postgresql-client-${major}"; done; \
    apt-get install -y --no-install-recommends $packages; \
    if [ "${PG_SOURCE}" = pgdg ]; then apt-get purge -y gnupg; apt-get autoremove -y; fi; \
    apt-get clean; rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/permafrost /opt/permafrost
# pitr runs the recovery server as PITR_OS_USER: here that is the image's own user.
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/permafrost permafrost \
    && install -d -o permafrost -g permafrost /var/lib/permafrost/wal-spool /var/lib/permafrost/tmp \
        /var/lib/permafrost/monitor-state
ENV PITR_OS_USER=permafrost
USER permafrost
WORKDIR /var/lib/permafrost
EXPOSE 8090
# The scheduler's and the restore worker's check (compose gives the monitor its own, curl on
# /health): the metadata store answers and the catalog reads.
HEALTHCHECK --interval=60s --timeout=20s --start-period=60s --retries=3 \
    CMD ["permafrost", "status"]
ENTRYPOINT []
CMD ["permafrost", "--help"]
# Last, so that a new revision rebuilds no layer above.
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="permafrost" \
      org.opencontainers.image.description="PostgreSQL backups to S3-compatible storage" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
