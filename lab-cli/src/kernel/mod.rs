//! The bottom layer: facts about, and operations on, the running kernel and
//! this process (namespaces, netlink, BTF, tracefs, bpffs, sysctls, kernel
//! symbols, capabilities, signals), and the plan/apply vocabulary every
//! datapath shares (`datapath`). Nothing here knows about eBPF programs
//! or what labctl does with them.

pub mod bpffs;
pub mod btf;
pub mod cgroup;
pub mod child;
pub mod clock;
pub mod cri;
pub mod datapath;
pub mod interrupt;
pub mod kallsyms;
pub mod locks;
pub mod names;
pub mod netns;
pub mod nflog;
pub mod node;
pub mod outfile;
pub mod podcgroup;
pub mod privilege;
pub mod ready;
pub mod rtnl;
pub mod safefile;
pub mod sockets;
pub mod sysctl;
pub mod tool;
pub mod tracefs;
