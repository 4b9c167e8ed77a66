//! labctl as a CNI plugin: what a container runtime (containerd, CRI-O,
//! `cnitool`) calls to give a pod its network. `spec` is the contract as
//! data (versions, environment, config, result and error objects), `ipam`
//! hands out the node's pod addresses, `plugin` does each operation to the
//! node, `calllog` records every call for `labctl cni log`.

pub mod calllog;
pub mod ipam;
pub mod plugin;
pub mod spec;
