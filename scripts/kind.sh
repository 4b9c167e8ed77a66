#!/bin/sh
# Copies labctl into every node of a kind cluster, so a learner can run it
# there: `docker exec -it kind-worker labctl trace`.
#
#   scripts/kind.sh [CLUSTER]          (default cluster name: kind)
#   scripts/kind.sh --cni [CLUSTER]    labctl as the cluster's CNI plugin
#
# With --cni the cluster is created when it does not exist yet, with kind's
# own CNI (kindnet) disabled (the config is printed first); on every node
# labctl becomes /opt/cni/bin/labctl-cni with a conflist for the node's pod
# CIDR in /etc/cni/net.d/10-labctl.conflist, and each node gets a route to
# every other node's pod CIDR (kindnet's job, which no one does otherwise).
# The nodes turn Ready once kubelet sees the conflist; `docker exec NODE
# labctl cni log --follow` shows every call containerd makes.
#
# labctl is built with the C library linked in statically (crt-static), so it
# runs in any node image. Needs docker, kind (and kubectl with --cni) and this
# repository's toolchain (scripts/setup.sh).
set -eu

cni=
if [ "${1:-}" = "--cni" ]; then
    cni=1
    shift
fi
cluster=${1:-kind}
root=$(cd "$(dirname "$0")/.." && pwd)

need="docker kind cargo"
[ -n "$cni" ] && need="$need kubectl"
for tool in $need; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "kind.sh: \`$tool\` is not installed" >&2
        exit 4
    fi
done

if [ -n "$cni" ] && ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    config=$(mktemp)
    trap 'rm -f "$config"' EXIT
    cat >"$config" <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  disableDefaultCNI: true     # no kindnet: labctl-cni is the plugin
  podSubnet: 10.244.0.0/16    # each node gets a /24 of it (spec.podCIDR)
nodes:
  - role: control-plane
  - role: worker
EOF
    echo "kind.sh: creating cluster \`$cluster\` with this config:"
    sed 's/^/    /' "$config"
    kind create cluster --name "$cluster" --config "$config"
fi

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

[ -z "$cni" ] && exit 0

context="kind-$cluster"
for node in $nodes; do
    cidr=$(kubectl --context "$context" get node "$node" -o jsonpath='{.spec.podCIDR}')
    if [ -z "$cidr" ]; then
        echo "kind.sh: node $node has no pod CIDR (was the cluster made with networking.podSubnet?)" >&2
        exit 2
    fi
    docker exec "$node" mkdir -p /opt/cni/bin /etc/cni/net.d
    docker exec "$node" ln -sf /usr/local/bin/labctl /opt/cni/bin/labctl-cni
    # kindnet's conflist would name ptp; labctl-cni does what ptp and
    # host-local do, with labctl's datapath options ("labctl").
    docker exec -i "$node" sh -c 'cat > /etc/cni/net.d/10-labctl.conflist' <<EOF
{
  "cniVersion": "1.0.0",
  "name": "labctl",
  "plugins": [
    {
      "type": "labctl-cni",
      "mtu": 1500,
      "ipam": {"subnet": "$cidr"},
      "labctl": {"masquerade": "netfilter", "clusterCIDR": "10.244.0.0/16"}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
    echo "kind.sh: $node: /opt/cni/bin/labctl-cni, pod CIDR $cidr"
done

# Each node reaches the other nodes' pods through that node.
for node in $nodes; do
    for other in $nodes; do
        [ "$node" = "$other" ] && continue
        cidr=$(kubectl --context "$context" get node "$other" -o jsonpath='{.spec.podCIDR}')
        addr=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$other")
        docker exec "$node" ip route replace "$cidr" via "$addr"
    done
done
echo "kind.sh: done; \`kubectl --context $context get nodes\` turns Ready, then \`docker exec -it NODE labctl cni log --follow\`"
