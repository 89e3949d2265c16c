#!/bin/sh
# Run one `recsys-indexer` command as the driver of a rebuild on a Ray cluster (the indexer image
# installs this as `recsys-ray-job`; docker/compose.scale.yaml's indexer uses it as entrypoint).
#
# A Ray driver given a cluster address (host:6379) must run on a node of that cluster: ray.init
# looks for a raylet on the local machine and gives up without one. So when RECSYS_RAY_ADDRESS is
# such an address, this script first joins the cluster as a node without CPUs or GPUs (the
# embedding actors go to the workers), runs the command, leaves the cluster, and exits with the
# command's own exit code (indexer/cli.py lists them; 1 when the cluster cannot be joined).
# SIGTERM and SIGINT are passed on to the command, which stops a build cleanly.
# With no address, "auto", "local" or a Ray Client address (ray://...) the command just runs.
#
# Meant for a container of its own: `ray stop` ends every Ray process it can see.
set -u

address="${RECSYS_RAY_ADDRESS:-}"
case "$address" in
    "" | auto | local | ray://*) exec recsys-indexer "$@" ;;
esac

if ! ray start --address="$address" --num-cpus=0 --num-gpus=0 --disable-usage-stats >&2; then
    echo "recsys-ray-job: cannot join the Ray cluster at $address" >&2
    exit 1
fi

recsys-indexer "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
wait "$child"
rc=$?
# A signal ends `wait` early (status > 128) while the command is still winding down: wait for it.
while kill -0 "$child" 2>/dev/null; do
    wait "$child"
    rc=$?
done
ray stop >/dev/null 2>&1 || true
exit "$rc"
