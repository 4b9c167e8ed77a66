//! The errors of setting up and reading one of our programs, shared by every
//! program module (tracefs, BTF, loading, maps).

use aya::maps::MapError;
use thiserror::Error;

use super::loader::LoadError;
use crate::kernel::{btf::BtfError, netns::NetnsError, rtnl::RtnlError, tracefs::TracefsError};

#[derive(Debug, Error)]
pub enum ProgramSetupError {
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot read map {map}: {source}")]
    Map { map: &'static str, source: MapError },
    #[error(transparent)]
    Rtnl(#[from] RtnlError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot create {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the ring buffer size must be a power of two multiple of the page size, got {0}")]
    RingSize(u32),
}
