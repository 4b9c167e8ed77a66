//! Names for what events carry as numbers: network namespace inodes and
//! interface indexes (which are only unique within their namespace).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::kernel::netns::{self, NetNs};

/// How long a looked-up name is trusted. Labs delete and recreate
/// namespaces and links all the time, and the kernel reuses both netns
/// inodes and ifindexes, so a name cached forever would turn wrong.
const NAME_TTL: Duration = Duration::from_secs(2);

/// A Kubernetes-style pod identity: `namespace/name` (and the uid, when a
/// runtime has one). labctl's own lab pods are `LAB/MEMBER`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a higher layer knows about a namespace: the name to show, and the
/// pod it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub pod: Option<PodRef>,
}

/// How fresh a higher layer's names must be (see [`Aliases`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The names known now, at once: a view on its way (a scrape, an
    /// event) never waits for the container runtime. Old names start a
    /// refresh in the background.
    Known,
    /// Names read after this call (a view starting, a namespace never seen
    /// that may be a pod that just started), waited for briefly, and only
    /// while the runtime answers: one that does not gets [`Want::Known`].
    Newer,
}

/// Names given by a higher layer (lab members, pods), by namespace inode:
/// `lab::names::member_names`, a cache refreshed in the background.
pub type Aliases = fn(Want) -> Arc<HashMap<u64, Identity>>;

#[derive(Debug)]
pub struct Names {
    netns: HashMap<u64, NetNs>,
    aliases_of: Option<Aliases>,
    aliases: Arc<HashMap<u64, Identity>>,
    scanned: Instant,
    /// Inodes a rescan could not name, and when.
    misses: HashMap<u64, Instant>,
    ifnames: HashMap<(u64, u32), (Option<String>, Instant)>,
}

impl Default for Names {
    fn default() -> Self {
        Self::new()
    }
}

impl Names {
    pub fn new() -> Self {
        Self::with_aliases(None)
    }

    /// Names that prefer `aliases` (re-read on every rescan) to the kernel's.
    pub fn with_aliases(aliases_of: Option<Aliases>) -> Self {
        let mut n = Self {
            netns: HashMap::new(),
            aliases_of,
            aliases: Arc::default(),
            scanned: Instant::now(),
            misses: HashMap::new(),
            ifnames: HashMap::new(),
        };
        n.rescan(Want::Newer);
        n
    }

    fn rescan(&mut self, want: Want) {
        self.netns = netns::known();
        if let Some(of) = &self.aliases_of {
            self.aliases = of(want);
        }
        self.scanned = Instant::now();
        self.misses.retain(|_, at| at.elapsed() <= NAME_TTL);
    }

    /// An alias (a lab member), an `ip netns` name, `host`, `pid:N`, or the
    /// inode number; `?` when the packet had no namespace (inode 0). Every
    /// one of them is accepted back by `--netns`.
    pub fn netns(&mut self, ino: u64) -> String {
        if ino == 0 {
            return "?".into();
        }
        self.refresh_for(ino);
        if let Some(alias) = self.aliases.get(&ino) {
            return alias.name.clone();
        }
        self.netns
            .get(&ino)
            .map(|ns| ns.name().to_owned())
            .unwrap_or_else(|| ino.to_string())
    }

    /// Rescans when `ino` was never seen (a pod that just appeared: the
    /// aliases are asked for names read after now) or the names are older
    /// than NAME_TTL (the aliases known now). A namespace a rescan could
    /// not name (a process's we cannot see) is not looked up again on every
    /// event, only once its miss is older than NAME_TTL.
    fn refresh_for(&mut self, ino: u64) {
        let missed = self
            .misses
            .get(&ino)
            .is_some_and(|at| at.elapsed() <= NAME_TTL);
        let want = if !self.netns.contains_key(&ino) && !missed {
            Want::Newer
        } else if self.scanned.elapsed() > NAME_TTL {
            Want::Known
        } else {
            return;
        };
        self.rescan(want);
        if !self.netns.contains_key(&ino) {
            self.misses.insert(ino, Instant::now());
        }
    }

    /// The pod the namespace belongs to, if a higher layer said so.
    pub fn pod(&mut self, ino: u64) -> Option<PodRef> {
        if ino == 0 {
            return None;
        }
        self.refresh_for(ino);
        self.aliases.get(&ino).and_then(|i| i.pod.clone())
    }

    /// The interface's name inside its namespace, when it can be found.
    pub fn ifname(&mut self, netns_ino: u64, ifindex: u32) -> Option<String> {
        if ifindex == 0 {
            return None;
        }
        if let Some((cached, at)) = self.ifnames.get(&(netns_ino, ifindex))
            && at.elapsed() <= NAME_TTL
        {
            return cached.clone();
        }
        self.refresh_for(netns_ino);
        let name = self
            .netns
            .get(&netns_ino)
            .and_then(|ns| ns.run(|| index_to_name(ifindex)).ok().flatten());
        self.ifnames
            .insert((netns_ino, ifindex), (name.clone(), Instant::now()));
        name
    }
}

/// if_indextoname(3) in the calling thread's namespace.
pub fn index_to_name(ifindex: u32) -> Option<String> {
    nix::net::if_::if_indextoname(ifindex)
        .ok()
        .map(|name| name.to_string_lossy().into_owned())
}
