# syntax=docker/dockerfile:1
# One image for the three services (scheduler, monitor, restore); compose gives each its command.
#   docker build --build-arg PG_MAJOR=16 -t permafrost .
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

# --- runtime: PostgreSQL client and server binaries of PG_MAJOR, the venv, a non-root user ---
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG PG_MAJOR=16
ENV PG_MAJOR=${PG_MAJOR} \
    PATH=/opt/permafrost/bin:/usr/lib/postgresql/${PG_MAJOR}/bin:$PATH \
    PG_BIN_DIR=/usr/lib/postgresql/${PG_MAJOR}/bin \
    PYTHONUNBUFFERED=1 \
    WAL_SPOOL_DIR=/var/lib/permafrost/wal-spool \
    RESTORE_TMPDIR=/var/lib/permafrost/tmp
# The server binaries are needed for point-in-time recovery in the restore container; Debian
# itself ships one major version, so they come from the PostgreSQL project's apt repository.
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
    apt-get install -y --no-install-recommends "postgresql-${PG_MAJOR}" "postgresql-client-${PG_MAJOR}"; \
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
