//! Waiting for child processes without hanging on Ctrl-C / SIGTERM:
//! `lab exec`'s command (passed the signal, as `sudo` does) and the
//! shell lines an exercise runs (stopped with the command).

use std::{
    io::{self, Read},
    os::unix::process::CommandExt as _,
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};

use super::interrupt::{self, Stop};

/// The longest nap between two looks at a child.
const NAP: Duration = Duration::from_millis(50);

/// How long a child that was passed SIGTERM or SIGHUP has to exit before
/// it is killed.
pub const GRACE: Duration = Duration::from_secs(5);

fn pid(child: &Child) -> io::Result<Pid> {
    i32::try_from(child.id())
        .map(Pid::from_raw)
        .map_err(|_| io::Error::other("child pid out of range"))
}

/// Waits for `child` and returns its own exit status. A SIGTERM or SIGHUP
/// labctl gets is passed on to it (Ctrl-C from a terminal reaches it by
/// itself: it runs in the terminal's process group, and an interactive
/// shell keeps running); if it is still running [`GRACE`] later, it is
/// killed.
pub fn wait_forwarding(child: &mut Child) -> io::Result<ExitStatus> {
    let stop = Stop::new();
    let mut passed: Option<Instant> = None;
    let mut nap = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        match (interrupt::signal(), passed) {
            (Some(sig @ (Signal::SIGTERM | Signal::SIGHUP)), None) => {
                kill(pid(child)?, sig)?;
                passed = Some(Instant::now());
            }
            (_, Some(at)) if at.elapsed() >= GRACE => {
                child.kill()?;
                return child.wait();
            }
            _ => {}
        }
        // A signal keeps the stop's pipe readable: nap plainly after one.
        if stop.stopped() {
            thread::sleep(nap);
        } else {
            stop.wait(nap);
        }
        nap = (nap * 2).min(NAP);
    }
}

/// Runs `command` in a process group of its own, as
/// [`Command::output`] does; Ctrl-C / SIGTERM kills the whole group (its
/// children too) and ends it with an `Interrupted` error.
pub fn output(command: &mut Command) -> io::Result<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let group = pid(&child)?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe
                && let Err(e) = pipe.read_to_end(&mut bytes)
            {
                tracing::debug!("reading a child's output: {e}");
            }
            bytes
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stop = Stop::new();
    let mut nap = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if stop.wait(nap) {
            // The group: a child of the shell may hold the pipes open.
            if let Err(e) = killpg(group, Signal::SIGKILL) {
                tracing::debug!("killing {group}'s group: {e}");
            }
            child.wait()?;
            break None;
        }
        nap = (nap * 2).min(NAP);
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "stopped by Ctrl-C / SIGTERM",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_collected_as_std_does() {
        let out =
            output(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"])).unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(3));
        let mut child = Command::new("true").spawn().unwrap();
        assert!(wait_forwarding(&mut child).unwrap().success());
    }
}
