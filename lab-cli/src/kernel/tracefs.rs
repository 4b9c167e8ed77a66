//! tracefs: finding (or mounting) it and reading tracepoint record formats.
//!
//! Tracepoint field offsets are read from the running kernel's
//! `events/<category>/<name>/format`, never hard-coded: they moved between
//! kernel versions (e.g. `skb:kfree_skb` gained `reason` in 5.17 and `rx_sk`
//! in 6.11).

use std::{
    fs,
    path::{Path, PathBuf},
};

use thiserror::Error;

/// Where tracefs is mounted on current kernels.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Where tracefs appears on older setups, through debugfs.
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at {TRACEFS} failed ({0}); fix: mount -t tracefs tracefs {TRACEFS}"
    )]
    Mount(nix::Error),
    #[error("tracepoint {category}:{name} does not exist on this kernel ({path}: {source})")]
    NoEvent {
        category: String,
        name: String,
        path: String,
        source: std::io::Error,
    },
    #[error("tracepoint {category}:{name} has no field `{field}` on this kernel")]
    NoField {
        category: String,
        name: String,
        field: String,
    },
}

/// Where tracefs is, and whether labctl mounted it just now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracefs {
    pub root: PathBuf,
    pub mounted_now: bool,
}

/// Finds tracefs, mounting it at /sys/kernel/tracing when it is not mounted
/// (it is not on a fresh boot of some distributions and kind nodes).
pub fn ensure_mounted() -> Result<Tracefs, TracefsError> {
    for root in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(root).join("events").is_dir() {
            return Ok(Tracefs {
                root: root.into(),
                mounted_now: false,
            });
        }
    }
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(TracefsError::Mount)?;
    tracing::info!("mounted tracefs at {TRACEFS}");
    Ok(Tracefs {
        root: TRACEFS.into(),
        mounted_now: true,
    })
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// The record layout of one tracepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFormat {
    pub category: String,
    pub name: String,
    pub fields: Vec<Field>,
}

impl EventFormat {
    /// Reads `events/<category>/<name>/format` under `tracefs`.
    pub fn read(tracefs: &Path, category: &str, name: &str) -> Result<Self, TracefsError> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = fs::read_to_string(&path).map_err(|source| TracefsError::NoEvent {
            category: category.into(),
            name: name.into(),
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::parse(category, name, &text))
    }

    /// Parses the text of a format file. Lines look like
    /// `\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;`.
    pub fn parse(category: &str, name: &str, text: &str) -> Self {
        let fields = text.lines().filter_map(parse_field_line).collect();
        Self {
            category: category.into(),
            name: name.into(),
            fields,
        }
    }

    pub fn field(&self, field: &str) -> Result<&Field, TracefsError> {
        self.fields
            .iter()
            .find(|f| f.name == field)
            .ok_or_else(|| TracefsError::NoField {
                category: self.category.clone(),
                name: self.name.clone(),
                field: field.into(),
            })
    }
}

fn parse_field_line(line: &str) -> Option<Field> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    for part in line.split(';') {
        let part = part.trim();
        if let Some(d) = part.strip_prefix("field:") {
            decl = Some(d);
        } else if let Some(o) = part.strip_prefix("offset:") {
            offset = o.parse().ok();
        } else if let Some(s) = part.strip_prefix("size:") {
            size = s.parse().ok();
        }
    }
    // The name is the last identifier of the declaration, before any `[N]`.
    let decl = decl?;
    let name = decl
        .split(|c: char| c.is_whitespace() || c == '*')
        .next_back()?
        .split('[')
        .next()?;
    Some(Field {
        name: name.to_owned(),
        offset: offset?,
        size: size?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // `skb:kfree_skb` as printed by kernel 6.18.
    const KFREE_SKB: &str = "name: kfree_skb
ID: 1522
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;

print fmt: \"skbaddr=%p\"
";

    #[test]
    fn parses_kfree_skb_fields() {
        let f = EventFormat::parse("skb", "kfree_skb", KFREE_SKB);
        assert_eq!(f.fields.len(), 9);
        let skb = f.field("skbaddr").unwrap();
        assert_eq!((skb.offset, skb.size), (8, 8));
        let reason = f.field("reason").unwrap();
        assert_eq!((reason.offset, reason.size), (36, 4));
        assert_eq!(f.field("common_pid").unwrap().offset, 4);
        assert!(f.field("nope").is_err());
    }

    #[test]
    fn parses_array_fields() {
        let f =
            parse_field_line("\tfield:char name[16];\toffset:12;\tsize:16;\tsigned:0;").unwrap();
        assert_eq!(f.name, "name");
        assert_eq!(f.offset, 12);
    }

    #[test]
    fn reads_the_running_kernels_format_when_tracefs_is_there() {
        let root = Path::new(TRACEFS);
        if !root.join("events/skb/kfree_skb/format").exists() {
            eprintln!("skipped: {TRACEFS} is not mounted or not readable");
            return;
        }
        let f = EventFormat::read(root, "skb", "kfree_skb").unwrap();
        assert!(f.field("skbaddr").is_ok());
    }
}
