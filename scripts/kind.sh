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

target=$(rustc -vV | sed -n 's/^host: //p')
echo "kind.sh: building a static labctl for $target"
(cd "$root" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release -p lab-cli --bin labctl --target "$target")
bin=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/$target/release/labctl

for node in $nodes; do
    docker cp "$bin" "$node:/usr/local/bin/labctl"
    echo "kind.sh: labctl copied to $node (docker exec -it $node labctl doctor)"
done
