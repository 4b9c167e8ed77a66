#!/bin/sh
# Copies labctl into every node of a kind cluster, so a learner can run it
# there: `docker exec -it kind-worker labctl trace`.
#
#   scripts/kind.sh [CLUSTER]        (default cluster name: kind)
#
# labctl is built with the C library linked in statically (crt-static), so it
# runs in any node image. Needs docker, kind and this repository's toolchain
# (scripts/setup.sh).
set -eu

cluster=${1:-kind}
root=$(cd "$(dirname "$0")/.." && pwd)

for tool in docker kind cargo; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "kind.sh: \`$tool\` is not installed" >&2
        exit 4
    fi
done

nodes=$(kind get nodes --name "$cluster")
if [ -z "$nodes" ]; then
    echo "kind.sh: cluster \`$cluster\` has no nodes (see \`kind get clusters\`)" >&2
    exit 2
fi

echo "kind.sh: building a static labctl (cargo xtask static --release)"
bin=$(cd "$root" && cargo xtask static --release | tail -n 1)

for node in $nodes; do
    docker cp "$bin" "$node:/usr/local/bin/labctl"
    echo "kind.sh: labctl copied to $node (docker exec -it $node labctl doctor)"
done
