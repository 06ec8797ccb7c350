# syntax=docker/dockerfile:1
# One image for the three services (scheduler, monitor, restore); compose gives each its command.
#   docker build -t permafrost .                                   # PostgreSQL 13 to 18
#   docker build --build-arg PG_MAJORS="16 17" -t permafrost .      # only the majors you run
ARG PYTHON_VERSION=3.11

# --- build: the wheel and its dependencies, in a virtual environment -------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/permafrost
COPY pyproject.toml README.md /src/
COPY permafrost /src/permafrost
COPY scheduler /src/scheduler
COPY monitor /src/monitor
COPY restore /src/restore
RUN /opt/permafrost/bin/pip install /src

# --- runtime: PostgreSQL client and server binaries of PG_MAJORS, the venv, a non-root user --
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
# Every major listed is installed side by side under /usr/lib/postgresql/N/bin; Permafrost picks
# the programs of each server's own major (README: "Supported PostgreSQL versions").
ARG PG_MAJORS="13 14 15 16 17 18"
ENV PG_MAJORS=${PG_MAJORS} \
    PATH=/opt/permafrost/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WAL_SPOOL_DIR=/var/lib/permafrost/wal-spool \
    RESTORE_TMPDIR=/var/lib/permafrost/tmp
# The server binaries are needed for point-in-time recovery in the restore container; Debian
# itself ships one major version, so they come from the PostgreSQL project's apt repository.
# Each major adds about 60 MB (Debian's postgresql-15 and postgresql-client-15: 61 MB installed).
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl gnupg zstd; \
    install -d /usr/share/postgresql-common/pgdg; \
    curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
        https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
    echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
        > /etc/apt/sources.list.d/pgdg.list; \
    mkdir -p /etc/postgresql-common/createcluster.d; \
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/permafrost.conf; \
    apt-get update; \
    packages=""; for major in ${PG_MAJORS}; do \
        packages="$packages postgresql-${major} postgresql-client-${major}"; done; \
    apt-get install -y --no-install-recommends $packages; \
    apt-get purge -y gnupg; apt-get autoremove -y; rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/permafrost /opt/permafrost
# pitr runs the recovery server as PITR_OS_USER: here that is the image's own user.
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/permafrost permafrost \
    && install -d -o permafrost -g permafrost /var/lib/permafrost/wal-spool /var/lib/permafrost/tmp \
        /var/lib/permafrost/monitor-state
ENV PITR_OS_USER=permafrost
USER permafrost
WORKDIR /var/lib/permafrost
EXPOSE 8090
ENTRYPOINT []
CMD ["permafrost", "--help"]
