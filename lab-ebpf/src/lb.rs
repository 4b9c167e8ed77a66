//! Service lookup and backend selection, shared by the tc load balancer and
//! socket-LB (`bin/lb.rs`), as Cilium's `lb4_lookup_service` and
//! `lb4_select_backend_id` (random selection).

use aya_ebpf::{helpers::bpf_get_prandom_u32, maps::HashMap};
use lab_common::lb::{Lb4Backend, Lb4Key, Lb4Service};

/// What a destination is.
pub enum Lookup {
    /// Not a service frontend: leave it alone.
    NotService,
    /// A frontend without backends (or a slot pointing nowhere).
    NoBackend,
    Backend(Picked),
}

/// The backend chosen for a new connection.
pub struct Picked {
    pub backend_id: u32,
    pub backend: Lb4Backend,
    pub rev_nat_index: u16,
}

/// Looks `vip:port/proto` (network order) up and picks one of its backends
/// at random.
#[inline(always)]
pub fn pick(
    services: &HashMap<Lb4Key, Lb4Service>,
    backends: &HashMap<u32, Lb4Backend>,
    vip: u32,
    port: u16,
    proto: u8,
) -> Lookup {
    let Some(front) = services.get_ptr(Lb4Key::new(vip, port, proto, 0)) else {
        return Lookup::NotService;
    };
    // SAFETY: a pointer into the map value, valid for this run.
    let front = unsafe { *front };
    if front.count == 0 {
        return Lookup::NoBackend;
    }
    // SAFETY: the PRNG helper has no preconditions.
    let slot = (unsafe { bpf_get_prandom_u32() } % u32::from(front.count)) as u16 + 1;
    let Some(s) = services.get_ptr(Lb4Key::new(vip, port, proto, slot)) else {
        return Lookup::NoBackend;
    };
    // SAFETY: as above.
    let backend_id = unsafe { (*s).backend_id };
    match backends.get_ptr(backend_id) {
        Some(b) => Lookup::Backend(Picked {
            backend_id,
            // SAFETY: as above.
            backend: unsafe { *b },
            rev_nat_index: front.rev_nat_index,
        }),
        None => Lookup::NoBackend,
    }
}
