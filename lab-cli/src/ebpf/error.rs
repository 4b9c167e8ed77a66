//! The errors of setting up and reading one of our programs, shared by every
//! program module (tracefs, BTF, loading, maps).

use aya::maps::MapError;
use thiserror::Error;

use super::loader::LoadError;
use crate::kernel::{
    bpffs::BpffsError, btf::BtfError, netns::NetnsError, rtnl::RtnlError, tracefs::TracefsError,
};

#[derive(Debug, Error)]
pub enum ProgramSetupError {
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Bpffs(#[from] BpffsError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot read map {map}: {source}")]
    Map { map: &'static str, source: MapError },
    #[error("cannot detach program `{program}` from {target}: {source}")]
    Detach {
        program: &'static str,
        target: String,
        source: Box<aya::programs::tc::TcError>,
    },
    #[error("cannot keep program `{program}` attached: {source}")]
    Link {
        program: &'static str,
        source: aya::programs::links::LinkError,
    },
    #[error(transparent)]
    Rtnl(#[from] RtnlError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot create {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} {problem}; labctl keeps root's pinned maps only in a directory that only root can change: check what is inside, remove it (`rm -r {path}`) and run again"
    )]
    UnsafePinDir {
        path: std::path::PathBuf,
        problem: String,
    },
    #[error("the ring buffer size must be a power of two multiple of the page size, got {0}")]
    RingSize(u32),
    #[error(
        "this kernel's struct layout is not what the program expects: {0}; please report it with `uname -r`"
    )]
    Layout(String),
}
