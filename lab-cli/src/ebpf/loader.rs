//! Loading our embedded objects, with errors a learner can act on.

use std::io;

use aya::{Ebpf, EbpfError, EbpfLoader, programs::ProgramError};
use thiserror::Error;

/// How many lines of a verifier log to show: the reason is at the end.
const VERIFIER_TAIL_LINES: usize = 20;

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("the kernel refused eBPF object `{object}`: {source}")]
    Object {
        object: &'static str,
        source: Box<EbpfError>,
    },
    #[error("eBPF object `{object}` has no program `{program}` (a build mismatch; rebuild labctl)")]
    MissingProgram {
        object: &'static str,
        program: &'static str,
    },
    #[error("eBPF object `{object}` has no map `{map}` (a build mismatch; rebuild labctl)")]
    MissingMap {
        object: &'static str,
        map: &'static str,
    },
    #[error("the verifier rejected program `{program}` ({errno}); end of its log:\n{tail}")]
    Verifier {
        program: String,
        errno: io::Error,
        tail: String,
    },
    #[error("cannot load program `{program}`: {source}")]
    Program {
        program: String,
        source: Box<ProgramError>,
    },
    #[error("cannot attach program `{program}` to {target}: {source}")]
    Attach {
        program: String,
        target: String,
        source: Box<ProgramError>,
    },
}

impl LoadError {
    /// Wraps a program load error, extracting the verifier log when there is one.
    pub fn load(program: &str, source: ProgramError) -> Self {
        match source {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => {
                let log = verifier_log.to_string();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(VERIFIER_TAIL_LINES)..].join("\n");
                Self::Verifier {
                    program: program.to_owned(),
                    errno: io_error,
                    tail,
                }
            }
            source => Self::Program {
                program: program.to_owned(),
                source: Box::new(source),
            },
        }
    }

    pub fn attach(program: &str, target: impl Into<String>, source: ProgramError) -> Self {
        Self::Attach {
            program: program.to_owned(),
            target: target.into(),
            source: Box::new(source),
        }
    }
}

/// Loads `bytes` (object `object`) after `configure` sets its globals.
pub fn load_object<'a>(
    object: &'static str,
    bytes: &[u8],
    configure: impl FnOnce(&mut EbpfLoader<'a>),
) -> Result<Ebpf, LoadError> {
    raise_memlock_limit();
    let mut loader = EbpfLoader::new();
    configure(&mut loader);
    loader.load(bytes).map_err(|source| LoadError::Object {
        object,
        source: Box::new(source),
    })
}

/// Program `name` of a loaded object, as its concrete type.
pub fn program<'a, T>(
    ebpf: &'a mut Ebpf,
    object: &'static str,
    name: &'static str,
) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram {
            object,
            program: name,
        })?
        .try_into()
        .map_err(|e| LoadError::load(name, e))
}

/// The kernel's BTF as aya reads it, for loading BTF-typed programs
/// (tp_btf); `program` names the program in the error.
pub fn vmlinux_btf(program: &str) -> Result<aya::Btf, LoadError> {
    aya::Btf::from_sys_fs().map_err(|e| LoadError::load(program, ProgramError::Btf(e)))
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so maps of
/// any size load there. Newer kernels use memcg accounting and ignore it.
fn raise_memlock_limit() {
    use nix::sys::resource::{Resource, setrlimit};
    if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, u64::MAX, u64::MAX) {
        tracing::debug!("could not raise RLIMIT_MEMLOCK: {e} (only matters before kernel 5.11)");
    }
}
