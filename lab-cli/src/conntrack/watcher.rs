//! Conntrack events that never die silently (`conntrack watch`, `observe`):
//! when the kernel drops events because the receive buffer overflowed
//! (ENOBUFS), the queue is drained, the table dumped, and the flows that
//! appeared or vanished meanwhile are handed out marked `resync`, with
//! the overrun reported.

use std::collections::HashMap;

use super::{
    entry::{CtEntry, Tuple},
    netlink::{CtEvent, Ctnetlink, CtnetlinkError, EventKind},
};
use crate::kernel::netns::NetNs;

type Key = (u8, Tuple);

/// One event as handed out: from the kernel, or found by a resync.
#[derive(Debug, Clone)]
pub struct Seen {
    pub event: CtEvent,
    pub resync: bool,
}

/// What one read returned.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Seen>,
    /// Set when events were lost: how many flows the resync found new and
    /// gone (both are in `events`, marked).
    pub overrun: Option<(u64, u64)>,
}

/// An event subscription in one namespace, with the table it keeps current.
pub struct Watcher {
    events: Ctnetlink,
    dumper: Ctnetlink,
    known: HashMap<Key, CtEntry>,
    overruns: u64,
}

impl Watcher {
    /// Subscribes in `ns` (None: the caller's own) with a receive buffer of
    /// `rcvbuf` bytes, then reads the table once.
    pub fn open(ns: Option<&NetNs>, rcvbuf: usize) -> Result<Self, CtnetlinkError> {
        let mut events = Ctnetlink::open_in(ns)?;
        events.subscribe(rcvbuf)?;
        let mut dumper = Ctnetlink::open_in(ns)?;
        let known = dumper
            .dump(None)?
            .into_iter()
            .map(|e| (e.key(), e))
            .collect();
        Ok(Self {
            events,
            dumper,
            known,
            overruns: 0,
        })
    }

    /// The event socket, for waiting on several watchers at once.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.events.fd()
    }

    /// Times events were lost so far.
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// Waits up to `timeout_ms` for events and returns them; after lost
    /// events, also what the resync found.
    pub fn next(&mut self, timeout_ms: u16) -> Result<Batch, CtnetlinkError> {
        match self.events.events(timeout_ms) {
            Ok(batch) => Ok(Batch {
                events: batch.into_iter().map(|e| self.remember(e, false)).collect(),
                overrun: None,
            }),
            Err(CtnetlinkError::Overrun) => {
                self.overruns += 1;
                let mut events = Vec::new();
                let found = self.resync(&mut events)?;
                Ok(Batch {
                    events,
                    overrun: Some(found),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// After any loss, reconciles once more (losses the kernel could not
    /// flag while its queue was still congested, or at the very end); the
    /// batch's `overrun` is set only when that found flows.
    pub fn reconcile(&mut self) -> Result<Batch, CtnetlinkError> {
        let mut events = Vec::new();
        if self.overruns == 0 {
            return Ok(Batch::default());
        }
        let (new, gone) = self.resync(&mut events)?;
        Ok(Batch {
            events,
            overrun: (new + gone > 0).then_some((new, gone)),
        })
    }

    fn remember(&mut self, event: CtEvent, resync: bool) -> Seen {
        match event.kind {
            EventKind::Destroy => self.known.remove(&event.entry.key()),
            _ => self.known.insert(event.entry.key(), event.entry.clone()),
        };
        Seen { event, resync }
    }

    /// Reads what is still queued, dumps the table, and adds (marked) the
    /// flows that appeared or vanished unseen. Returns how many of each.
    fn resync(&mut self, out: &mut Vec<Seen>) -> Result<(u64, u64), CtnetlinkError> {
        for ev in self.events.drain()? {
            out.push(self.remember(ev, false));
        }
        let now: HashMap<Key, CtEntry> = self
            .dumper
            .dump(None)?
            .into_iter()
            .map(|e| (e.key(), e))
            .collect();
        let (mut new, mut gone) = (0, 0);
        for (k, e) in &now {
            if !self.known.contains_key(k) {
                new += 1;
                out.push(Seen {
                    event: CtEvent {
                        kind: EventKind::New,
                        entry: e.clone(),
                    },
                    resync: true,
                });
            }
        }
        for (k, e) in &self.known {
            if !now.contains_key(k) {
                gone += 1;
                out.push(Seen {
                    event: CtEvent {
                        kind: EventKind::Destroy,
                        entry: e.clone(),
                    },
                    resync: true,
                });
            }
        }
        self.known = now;
        Ok((new, gone))
    }
}
