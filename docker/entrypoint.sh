#!/bin/sh
# Entrypoint of the service image: start with an empty Prometheus multiprocess folder (files left
# by the workers of an earlier run, which a restarted container keeps, would count as live), then
# run the command (gunicorn by default; `recsys ...` for one-off jobs such as migrations).
set -eu
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    rm -rf "${PROMETHEUS_MULTIPROC_DIR:?}"
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi
exec "$@"
