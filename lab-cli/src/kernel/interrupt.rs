//! Ctrl-C, SIGTERM and SIGHUP, and [`Stop`]: the one place every stream
//! and every blocking wait asks whether to stop.
//!
//! A signal sets a flag and writes to a pipe (a self-pipe, through
//! signal-hook) that is never drained: once a signal came it stays
//! readable, so a loop waiting with [`Stop::wait`], [`Stop::readable`] or
//! [`wait`] wakes at once instead of sleeping out its tick, however many
//! threads wait. Commands then clean up (detach, delete namespaces) and
//! end as docs/cli.md says: a stream prints its summary and exits 0, a
//! command stopped before its work is done returns [`Interrupted`] (130).

use std::{
    cell::RefCell,
    io,
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    sync::{
        Arc, LazyLock, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use nix::{
    fcntl::OFlag,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::signal::Signal,
};
use thiserror::Error;

#[derive(Debug, Error)]
#[error("interrupted")]
pub struct Interrupted;

/// The signals that stop labctl.
const SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The last stopping signal that came (0: none yet).
static SIGNAL: LazyLock<Arc<AtomicUsize>> = LazyLock::new(|| Arc::new(AtomicUsize::new(0)));

/// Written to by every stopping signal (None if no pipe could be made:
/// waits then sleep in short slices).
static SIGNAL_PIPE: LazyLock<Option<Pipe>> = LazyLock::new(|| Pipe::new().ok());

/// How long a wait sleeps at most between looks at the flags when it has
/// no pipe to wake it.
const SLICE: Duration = Duration::from_millis(50);

/// How often a [`Gone`] check runs while a [`Stop`] is asked.
pub const GONE_EVERY: Duration = Duration::from_millis(500);

/// A pipe whose read end turns readable for good at the first write.
#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        Ok(Self { read, write })
    }

    fn wake(&self) {
        // Non-blocking: a full pipe is readable already.
        if let Err(e) = nix::unistd::write(&self.write, &[1]) {
            tracing::debug!("waking the waiters: {e}");
        }
    }
}

/// Installs the handler once; later calls do nothing. After it, SIGINT,
/// SIGTERM and SIGHUP no longer kill labctl: they make [`requested`] true
/// and wake every wait.
pub fn install() -> io::Result<()> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    for sig in SIGNALS {
        // The flag first: a waiter woken by the pipe must find it set.
        signal_hook::flag::register_usize(sig as i32, SIGNAL.clone(), sig as usize)?;
        if let Some(pipe) = &*SIGNAL_PIPE {
            signal_hook::low_level::pipe::register(sig as i32, pipe.write.try_clone()?)?;
        }
    }
    INSTALLED.get_or_init(|| ());
    Ok(())
}

/// Whether Ctrl-C, SIGTERM or SIGHUP came.
pub fn requested() -> bool {
    SIGNAL.load(Ordering::SeqCst) != 0
}

/// The last stopping signal that came.
pub fn signal() -> Option<Signal> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        n => i32::try_from(n).ok().and_then(|n| Signal::try_from(n).ok()),
    }
}

/// `Err(Interrupted)` once Ctrl-C was pressed.
pub fn check() -> Result<(), Interrupted> {
    if requested() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// Sleeps up to `timeout`, less if Ctrl-C / SIGTERM comes; whether it came.
pub fn wait(timeout: Duration) -> bool {
    Stop::new().wait(timeout);
    requested()
}

/// Sleeps the milliseconds named by the environment variable `var`, when
/// it is set (5 s at most; Ctrl-C ends it): a test's pause between two
/// writes, to kill a command half-way.
pub fn test_delay(var: &str) {
    if let Some(ms) = std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok()) {
        wait(Duration::from_millis(ms.min(5000)));
    }
}

/// A stop a caller owns, for a loop in another thread (a drop tracer the
/// demo runs while it acts): [`Trigger::fire`] wakes a [`Stop`] made with
/// it as a signal does. Clones fire the same stop.
#[derive(Debug, Clone, Default)]
pub struct Trigger(Arc<TriggerState>);

#[derive(Debug)]
struct TriggerState {
    fired: AtomicBool,
    pipe: Option<Pipe>,
}

impl Default for TriggerState {
    fn default() -> Self {
        let pipe = match Pipe::new() {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::debug!("no wake-up pipe for a stop: {e}");
                None
            }
        };
        Self {
            fired: AtomicBool::new(false),
            pipe,
        }
    }
}

impl Trigger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops every [`Stop`] made with this trigger, at once.
    pub fn fire(&self) {
        self.0.fired.store(true, Ordering::SeqCst);
        if let Some(pipe) = &self.0.pipe {
            pipe.wake();
        }
    }

    pub fn fired(&self) -> bool {
        self.0.fired.load(Ordering::SeqCst)
    }
}

/// A check that what a view watches (a namespace, a lab) is still there:
/// `Some(sentence)` once it is gone, saying what went. Run every
/// [`GONE_EVERY`] while a [`Stop`] made with it is asked.
#[derive(Clone)]
pub struct Gone(Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl Gone {
    pub fn new(check: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(check))
    }

    /// Gone once every one of `all` is.
    pub fn all(all: Vec<Gone>, sentence: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self::new(move || all.iter().all(|g| (g.0)().is_some()).then(&sentence))
    }

    /// The check, run now.
    pub fn check(&self) -> Option<String> {
        (self.0)()
    }
}

impl std::fmt::Debug for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gone(..)")
    }
}

/// Why a [`Stop`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Ctrl-C, SIGTERM or SIGHUP.
    Signal,
    /// `--duration` passed.
    Duration,
    /// `--count` was reached.
    Count,
    /// The caller's [`Trigger`] fired.
    Trigger,
    /// What the view watches is gone: the sentence says what.
    Gone(String),
}

/// When a stream or a blocking wait ends: Ctrl-C / SIGTERM / SIGHUP
/// always, and whichever the caller adds: a duration, a count, a
/// [`Trigger`], a [`Gone`] check. The first reason found is kept.
///
/// ```no_run
/// # use lab_cli::kernel::interrupt::Stop;
/// # use std::time::Duration;
/// let stop = Stop::new().duration(Some(Duration::from_secs(5))).count(Some(10));
/// let mut seen = 0;
/// while !stop.stopped() {
///     // Wakes at once on Ctrl-C, at the latest at the deadline.
///     stop.wait(Duration::from_millis(100));
///     seen += 1;
///     if stop.counted(seen) {
///         break;
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Stop {
    started: Instant,
    deadline: Option<Instant>,
    count: Option<u64>,
    trigger: Option<Trigger>,
    gone: Option<Gone>,
    gone_due: RefCell<Instant>,
    why: RefCell<Option<Why>>,
}

impl Default for Stop {
    fn default() -> Self {
        Self::new()
    }
}

impl Stop {
    /// Until Ctrl-C / SIGTERM / SIGHUP; its clock starts now.
    pub fn new() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            deadline: None,
            count: None,
            trigger: None,
            gone: None,
            gone_due: RefCell::new(now),
            why: RefCell::new(None),
        }
    }

    /// Also once `duration` (if any) has passed since [`Stop::new`].
    pub fn duration(mut self, duration: Option<Duration>) -> Self {
        self.deadline = duration.map(|d| self.started + d);
        self
    }

    /// Also once [`Stop::counted`] is told `count` (if any) or more.
    pub fn count(mut self, count: Option<u64>) -> Self {
        self.count = count;
        self
    }

    /// Also once `trigger` (if any) fires.
    pub fn trigger(mut self, trigger: Option<Trigger>) -> Self {
        self.trigger = trigger;
        self
    }

    /// Also once `gone` (if any) finds what it checks gone.
    pub fn gone(mut self, gone: Option<Gone>) -> Self {
        self.gone = gone;
        self
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether `seen` reaches the count; from then on the stop says
    /// [`Why::Count`] (unless it had stopped already).
    pub fn counted(&self, seen: u64) -> bool {
        if self.count.is_some_and(|n| seen >= n) {
            self.end(Why::Count);
            true
        } else {
            false
        }
    }

    fn end(&self, why: Why) {
        self.why.borrow_mut().get_or_insert(why);
    }

    /// Why it stopped, or None while it runs. The first reason is kept.
    pub fn why(&self) -> Option<Why> {
        if let Some(why) = self.why.borrow().clone() {
            return Some(why);
        }
        let why = if requested() {
            Why::Signal
        } else if self.trigger.as_ref().is_some_and(Trigger::fired) {
            Why::Trigger
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Why::Duration
        } else if let Some(gone) = self.gone_now() {
            Why::Gone(gone)
        } else {
            return None;
        };
        self.end(why.clone());
        Some(why)
    }

    pub fn stopped(&self) -> bool {
        self.why().is_some()
    }

    /// Whether a signal stopped it.
    pub fn interrupted(&self) -> bool {
        self.why() == Some(Why::Signal)
    }

    /// `Err(Interrupted)` once a signal stopped it.
    pub fn check(&self) -> Result<(), Interrupted> {
        if self.interrupted() {
            Err(Interrupted)
        } else {
            Ok(())
        }
    }

    /// The [`Gone`] check, when it is due.
    fn gone_now(&self) -> Option<String> {
        let gone = self.gone.as_ref()?;
        let now = Instant::now();
        if now < *self.gone_due.borrow() {
            return None;
        }
        *self.gone_due.borrow_mut() = now + GONE_EVERY;
        gone.check()
    }

    /// Sleeps up to `timeout`: less when it stops meanwhile (a signal, the
    /// trigger, the deadline, a due gone check). Whether it stopped.
    pub fn wait(&self, timeout: Duration) -> bool {
        if let Err(e) = self.readable(&[], timeout) {
            // Nothing to wait on: poll(2) cannot fail but for lack of memory.
            tracing::debug!("waiting: {e}");
            std::thread::sleep(timeout.min(SLICE));
        }
        self.stopped()
    }

    /// Waits up to `timeout` until one of `fds` is readable (or hung up, or
    /// in error) or the stop comes (as [`Stop::wait`]); whether one of
    /// `fds` is. Once stopped it does not wait: the caller reads what is
    /// ready and ends.
    pub fn readable(&self, fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<bool> {
        let wanted: Vec<_> = fds.iter().map(|fd| (*fd, PollFlags::POLLIN)).collect();
        Ok(self
            .poll(&wanted, timeout)?
            .iter()
            .any(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)))
    }

    /// poll(2) on `fds` (each with the events wanted) for up to `timeout`,
    /// less when the stop comes (as [`Stop::wait`]): the events each one
    /// has (empty when none; all empty after a timeout or the stop).
    pub fn poll(
        &self,
        fds: &[(BorrowedFd<'_>, PollFlags)],
        timeout: Duration,
    ) -> io::Result<Vec<PollFlags>> {
        let timeout = if self.stopped() {
            Duration::ZERO
        } else {
            self.bounded(timeout)
        };
        let mut wake: Vec<BorrowedFd<'_>> = Vec::with_capacity(2);
        let mut slices = false;
        match &*SIGNAL_PIPE {
            Some(p) => wake.push(p.read.as_fd()),
            None => slices = true,
        }
        if let Some(t) = &self.trigger {
            match &t.0.pipe {
                Some(p) => wake.push(p.read.as_fd()),
                None => slices = true,
            }
        }
        let timeout = if slices { timeout.min(SLICE) } else { timeout };
        let mut all: Vec<PollFd<'_>> = fds
            .iter()
            .map(|(fd, events)| PollFd::new(*fd, *events))
            .chain(wake.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)))
            .collect();
        let none = || vec![PollFlags::empty(); fds.len()];
        match poll(&mut all, poll_timeout(timeout)) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => return Ok(none()),
            Err(e) => return Err(e.into()),
        }
        Ok(all[..fds.len()]
            .iter()
            .map(|p| p.revents().unwrap_or(PollFlags::empty()))
            .collect())
    }

    /// `timeout`, cut to the deadline and to the next gone check.
    fn bounded(&self, timeout: Duration) -> Duration {
        let now = Instant::now();
        let mut until = [Some(timeout)]
            .into_iter()
            .chain([
                self.deadline.map(|d| d.saturating_duration_since(now)),
                self.gone
                    .as_ref()
                    .map(|_| self.gone_due.borrow().saturating_duration_since(now)),
            ])
            .flatten();
        let first = until.next().unwrap_or(timeout);
        until.fold(first, Duration::min)
    }
}

/// Milliseconds for poll(2), rounded up (a wait of 0.4 ms must not spin).
fn poll_timeout(d: Duration) -> PollTimeout {
    let ms = d.as_micros().div_ceil(1000);
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

#[cfg(test)]
mod tests {
    use std::{net::UdpSocket, os::fd::AsFd as _, sync::Mutex, thread};

    use super::*;

    #[test]
    fn a_duration_ends_the_wait_at_the_deadline_not_at_the_tick() {
        let stop = Stop::new().duration(Some(Duration::from_millis(120)));
        assert_eq!(stop.why(), None);
        let t = Instant::now();
        // One long wait: it must end at the deadline.
        assert!(stop.wait(Duration::from_secs(10)));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(stop.why(), Some(Why::Duration));
        // Stopped: waits return at once.
        let t = Instant::now();
        assert!(stop.wait(Duration::from_secs(10)));
        assert!(t.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn a_trigger_wakes_a_waiter_in_another_thread_at_once() {
        let trigger = Trigger::new();
        let fire = trigger.clone();
        let stop = Stop::new().trigger(Some(trigger));
        let t = Instant::now();
        let firing = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            fire.fire();
        });
        assert!(stop.wait(Duration::from_secs(10)));
        let took = t.elapsed();
        firing.join().unwrap();
        assert!(took < Duration::from_millis(500), "woke after {took:?}");
        assert_eq!(stop.why(), Some(Why::Trigger));
        assert!(!stop.interrupted());
        assert!(stop.check().is_ok());
    }

    #[test]
    fn counts_and_the_first_reason_are_kept() {
        let trigger = Trigger::new();
        let stop = Stop::new().count(Some(3)).trigger(Some(trigger.clone()));
        assert!(!stop.counted(2));
        assert!(!stop.stopped());
        assert!(stop.counted(3));
        trigger.fire();
        assert_eq!(stop.why(), Some(Why::Count), "the first reason wins");
        // Without a count, nothing is ever counted.
        assert!(!Stop::new().counted(u64::MAX));
    }

    #[test]
    fn readable_fds_end_the_wait_and_are_reported() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let stop = Stop::new();
        let t = Instant::now();
        assert!(
            !stop
                .readable(&[rx.as_fd()], Duration::from_millis(30))
                .unwrap()
        );
        assert!(t.elapsed() >= Duration::from_millis(25));
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        let t = Instant::now();
        assert!(
            stop.readable(&[rx.as_fd()], Duration::from_secs(10))
                .unwrap()
        );
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(!stop.stopped());
    }

    #[test]
    fn a_gone_check_runs_every_half_second_and_stops_with_its_sentence() {
        let calls = Arc::new(Mutex::new(0u32));
        let gone_after = Instant::now() + Duration::from_millis(700);
        let counted = calls.clone();
        let stop = Stop::new().gone(Some(Gone::new(move || {
            *counted.lock().unwrap() += 1;
            (Instant::now() >= gone_after).then(|| "lab `x` was taken down".to_owned())
        })));
        let t = Instant::now();
        // Asked often; checked only when due.
        while !stop.stopped() {
            stop.wait(Duration::from_millis(5));
            assert!(t.elapsed() < Duration::from_secs(5), "never stopped");
        }
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(700), "{took:?}");
        assert!(took < Duration::from_millis(1500), "{took:?}");
        assert_eq!(stop.why(), Some(Why::Gone("lab `x` was taken down".into())));
        let n = *calls.lock().unwrap();
        assert!((2..=4).contains(&n), "checked {n} times");
        // Several things: gone once all are.
        let one = Gone::new(|| Some("a".into()));
        let other = Gone::new(|| None);
        assert_eq!(
            Gone::all(vec![one.clone(), other], || "all".into()).check(),
            None
        );
        assert_eq!(
            Gone::all(vec![one.clone(), one], || "all".into()).check(),
            Some("all".into())
        );
    }

    #[test]
    fn poll_timeouts_round_up() {
        assert_eq!(
            poll_timeout(Duration::from_micros(400)),
            PollTimeout::from(1u16)
        );
        assert_eq!(poll_timeout(Duration::ZERO), PollTimeout::ZERO);
        assert_eq!(poll_timeout(Duration::from_secs(1 << 40)), PollTimeout::MAX);
    }
}
