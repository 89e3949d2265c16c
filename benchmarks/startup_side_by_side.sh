#!/bin/bash
# Worker start-up of two checkouts, alternately, on one bench_recommend data folder: seconds from
# launching gunicorn (2 workers x 2 threads, as the rounds run it) until /health/ready first
# answers 200. Each server then runs 25 s (its background torch load) and is stopped.
#
#   git worktree add --detach /tmp/base 6241b5f
#   benchmarks/startup_side_by_side.sh benchmarks/_data/recommend-100000-10000000 /tmp/base "$PWD" 2
#
# The data folder's database is copied once to a temporary folder (a start only reads it).
# gunicorn is launched from inside each checkout: launched from elsewhere, the venv's editable
# install of this repository wins over PYTHONPATH in gunicorn's workers (session 13's runs of this
# script timed one checkout twice that way), and the script checks which code it is about to time.
set -euo pipefail
data=$(realpath "$1"); a=$(realpath "$2"); b=$(realpath "$3"); rounds=${4:-2}
venv=$(realpath "$(dirname "$0")/../.venv")
run=$(mktemp -d); trap 'rm -rf "$run"' EXIT
cp "$data/recsys.db" "$run/recsys.db"
port=8932
served_from() {  # the service package python finds from inside checkout $1
  (cd "$1" && PYTHONPATH=$1 "$venv/bin/python" -c 'import service, os; print(os.path.dirname(os.path.dirname(service.__file__)))')
}
start() {  # $1: the checkout whose code serves
  local t0 t1 pid code
  [ "$(served_from "$1")" = "$1" ] || { echo "would not serve $1's code (found $(served_from "$1"))" >&2; exit 1; }
  cd "$1"
  t0=$(date +%s.%N)
  RECSYS_DATA_DIR=$run RECSYS_INDEX_DIR=$data/indexes RECSYS_CLIP_ENABLED=false HF_HUB_OFFLINE=1 PYTHONPATH=$1 \
    "$venv/bin/gunicorn" -w 2 -k gthread --threads 2 -b 127.0.0.1:$port --chdir "$1" --log-level warning \
    'service.web.app:create_app()' > "$run/gunicorn.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 1200); do
    code=$(curl -s -o /dev/null -w "%{http_code}" 127.0.0.1:$port/health/ready || true)
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  t1=$(date +%s.%N)
  echo "$1: ready in $(echo "$t1 - $t0" | bc) s (last status $code)"
  sleep 25; kill "$pid"; wait "$pid" 2>/dev/null || true; sleep 2
}
for _ in $(seq 1 "$rounds"); do start "$a"; start "$b"; done
