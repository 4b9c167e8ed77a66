//! Ctrl-C and SIGTERM: turn them into a flag the commands poll, so that every
//! command runs its cleanup (detach, delete namespaces) before exiting.

use std::sync::atomic::{AtomicBool, Ordering};

use thiserror::Error;

static REQUESTED: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Installs the handler once; later calls do nothing.
pub fn install() -> Result<(), ctrlc::Error> {
    match ctrlc::set_handler(|| REQUESTED.store(true, Ordering::SeqCst)) {
        Ok(()) | Err(ctrlc::Error::MultipleHandlers) => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` once Ctrl-C was pressed.
pub fn check() -> Result<(), Interrupted> {
    if requested() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}
