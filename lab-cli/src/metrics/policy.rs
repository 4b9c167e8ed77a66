//! Policy verdict counters (`labctl_policy_verdicts_total`,
//! `labctl_policy_verdict_bytes_total`): what each `--policy-mode` lab's
//! datapath counted, read by [`lab::policy::all_verdict_counts`] (nft rule
//! counters through `nft -j list table` in each node, eBPF map entries
//! and per-endpoint metrics from the pinned maps).
//!
//! The reading calls out to `nft`, so it runs in a thread of its own: a
//! scrape asks for a reading and waits for it [`FRESH_WAIT`] at most, then
//! serves the last one it has (a stalled `nft` never holds a scrape; the
//! values are then one reading old).

use std::{
    sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError},
    time::Duration,
};

use crate::{lab::policy as lab_policy, policy::datapath::VerdictCount};

/// The longest a scrape waits for a fresh reading.
pub const FRESH_WAIT: Duration = Duration::from_millis(500);

/// One reading: counts by lab, and how many labs could not be read.
#[derive(Debug, Default)]
pub struct Reading {
    pub labs: Vec<(String, Vec<VerdictCount>)>,
    pub failed: u64,
}

#[derive(Default)]
struct State {
    last: Option<Arc<Reading>>,
    /// Readings asked for, and the last one started after its asking.
    asked: u64,
    covered: u64,
    started: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn shared() -> &'static Arc<Shared> {
    static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();
    SHARED.get_or_init(|| {
        Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        })
    })
}

impl Shared {
    fn refresh_forever(&self) {
        loop {
            let covers = {
                let mut state = lock(&self.state);
                while state.asked <= state.covered {
                    state = self
                        .changed
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                state.asked
            };
            let (labs, failed) = lab_policy::all_verdict_counts();
            let mut state = lock(&self.state);
            state.last = Some(Arc::new(Reading { labs, failed }));
            state.covered = covers;
            self.changed.notify_all();
        }
    }
}

/// The counters, as fresh as [`FRESH_WAIT`] allows (see the module docs).
pub fn reading() -> Arc<Reading> {
    let shared = shared();
    let mut state = lock(&shared.state);
    if !state.started {
        state.started = true;
        let thread = Arc::clone(shared);
        if let Err(e) = std::thread::Builder::new()
            .name("labctl-policy-counters".into())
            .spawn(move || thread.refresh_forever())
        {
            tracing::debug!("cannot start the policy counters' thread: {e}");
            state.started = false;
            drop(state);
            let (labs, failed) = lab_policy::all_verdict_counts();
            return Arc::new(Reading { labs, failed });
        }
    }
    state.asked += 1;
    let ticket = state.asked;
    shared.changed.notify_all();
    let deadline = std::time::Instant::now() + FRESH_WAIT;
    while state.covered < ticket {
        let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else {
            tracing::debug!("no policy counters read within {FRESH_WAIT:?}: using the last");
            break;
        };
        state = shared
            .changed
            .wait_timeout(state, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    state.last.clone().unwrap_or_default()
}
