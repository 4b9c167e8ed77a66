//! Exit codes and error reporting, in the style of ripgrep and fd: the whole
//! error chain is printed, the exit code says what kind of failure it was,
//! and a closed pipe (`labctl ... | head`) ends quietly.

use std::io;

use crate::{
    conntrack::filter::CtFilterError,
    drops::filter::FilterError,
    exercises::{ExerciseError, attempt::AttemptError, catalog::CatalogError},
    kernel::interrupt::Interrupted,
    kernel::netns::NetnsError,
    kernel::privilege::PrivilegeError,
    kernel::safefile::SafeFileError,
    lab::{LabError, faults::FaultError},
    policy::PolicyError,
};

use super::width;

/// A usage error found after parsing (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// How a successful run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// `doctor` found a required piece missing.
    EnvironmentNotReady,
    /// The command ran, and its result is negative (as `ping` exits 1 when
    /// nothing answered): e.g. `lab traffic` with unanswered probes.
    Negative,
    /// `lab exec`: the child's own exit code.
    Child(u8),
}

impl From<Outcome> for std::process::ExitCode {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Child(code) => std::process::ExitCode::from(code),
            o => ExitCode::from(o).into(),
        }
    }
}

/// Typed exit codes (documented in docs/cli.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Success = 0,
    /// Any other error.
    Failure = 1,
    /// Bad command line (clap uses 2 as well).
    Usage = 2,
    /// Not root / missing capabilities.
    Privilege = 3,
    /// The machine lacks something labctl needs (doctor's ✗).
    Environment = 4,
    /// Stopped by Ctrl-C / SIGTERM before the work was done.
    Interrupted = 130,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Success => ExitCode::Success,
            Outcome::EnvironmentNotReady => ExitCode::Environment,
            Outcome::Negative => ExitCode::Failure,
            Outcome::Child(0) => ExitCode::Success,
            Outcome::Child(_) => ExitCode::Failure,
        }
    }
}

/// The exit code for an error, from the first typed error in its chain.
pub fn classify(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if cause.is::<PrivilegeError>() {
            return ExitCode::Privilege;
        }
        if cause.is::<FilterError>() || cause.is::<CtFilterError>() || cause.is::<UsageError>() {
            return ExitCode::Usage;
        }
        if cause.is::<Interrupted>()
            || cause
                .downcast_ref::<ExerciseError>()
                .is_some_and(ExerciseError::is_interrupted)
        {
            return ExitCode::Interrupted;
        }
        if let Some(
            NetnsError::Exists(_)
            | NetnsError::NotFound(_)
            | NetnsError::BadName(_)
            | NetnsError::NotANetns(_),
        ) = cause.downcast_ref()
        {
            return ExitCode::Usage;
        }
        if usage(cause, LabError::is_usage)
            || usage(cause, FaultError::is_usage)
            || usage(cause, ExerciseError::is_usage)
            || usage(cause, CatalogError::is_usage)
            || usage(cause, AttemptError::is_usage)
            || usage(cause, SafeFileError::is_usage)
            || usage(cause, PolicyError::is_usage)
        {
            return ExitCode::Usage;
        }
    }
    ExitCode::Failure
}

/// Whether `cause` is an `E` that says it is the user's mistake.
fn usage<E: std::error::Error + 'static>(
    cause: &(dyn std::error::Error + 'static),
    is_usage: fn(&E) -> bool,
) -> bool {
    cause.downcast_ref::<E>().is_some_and(is_usage)
}

/// Whether the error is a closed stdout, which should end the run quietly.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Prints `error: ...` and every cause on standard error (see
/// [`write_report`]).
pub fn report(err: &anyhow::Error) {
    let mut out = anstream::stderr().lock();
    if let Err(e) = write_report(&mut out, err) {
        // Standard error is gone: nowhere left to say it.
        tracing::debug!("reporting an error: {e}");
    }
}

/// `error: ...` and every cause that says something new (see
/// [`new_causes`]), each filled to 80 columns.
pub fn write_report(out: &mut impl io::Write, err: &anyhow::Error) -> io::Result<()> {
    width::write_fill(out, &err.to_string(), "error: ", "       ")?;
    for cause in new_causes(err.as_ref()) {
        width::write_fill(out, &cause, "  caused by: ", "    ")?;
    }
    Ok(())
}

/// The causes of `err` that say something new: a cause whose text the one
/// before it already contains (`cannot write X: {source}`) is left out.
fn new_causes(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut before = err.to_string();
    let mut out = Vec::new();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !before.contains(&text) {
            out.push(text.clone());
        }
        before = text;
        source = cause.source();
    }
    out
}

/// An error and its causes on one line (for table cells).
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    for cause in new_causes(err) {
        s.push_str(": ");
        s.push_str(&cause);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn privilege_errors_map_to_3_through_context() {
        let err = Err::<(), _>(PrivilegeError {
            command: "trace".into(),
            missing: "CAP_BPF".into(),
        })
        .context("starting the tracer")
        .unwrap_err();
        assert_eq!(classify(&err), ExitCode::Privilege);
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot write /x: {source}")]
        struct Write {
            source: io::Error,
        }
        let io = || io::Error::from(io::ErrorKind::PermissionDenied);
        let err = anyhow::Error::new(Write { source: io() }).context("saving the lab");
        assert_eq!(
            new_causes(err.as_ref()),
            ["cannot write /x: permission denied"]
        );
        assert_eq!(
            one_line(err.as_ref()),
            "saving the lab: cannot write /x: permission denied"
        );
        let plain = anyhow::Error::new(io()).context("saving");
        assert_eq!(new_causes(plain.as_ref()), ["permission denied"]);
    }

    #[test]
    fn a_cause_already_said_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read the table: permission denied")]
        struct Outer(#[source] io::Error);
        let err = anyhow::Error::new(Outer(io::Error::from(io::ErrorKind::PermissionDenied)))
            .context("conntrack list failed");
        let mut out = Vec::new();
        write_report(&mut out, &err).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "error: conntrack list failed\n  caused by: cannot read the table: permission denied\n"
        );
        // A cause with news of its own is kept.
        let err = anyhow::anyhow!("disk full").context("cannot write the pcap");
        let mut out = Vec::new();
        write_report(&mut out, &err).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("caused by: disk full")
        );
    }

    #[test]
    fn broken_pipe_is_detected_anywhere_in_the_chain() {
        let err = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe)).context("writing");
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
        assert_eq!(classify(&anyhow::anyhow!("other")), ExitCode::Failure);
    }
}
