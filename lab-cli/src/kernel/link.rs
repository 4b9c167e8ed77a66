//! Link operations over rtnetlink, in the calling thread's network namespace.

use futures_util::TryStreamExt as _;
use rtnetlink::LinkUnspec;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LinkError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    #[error("interface `{0}` does not exist")]
    NotFound(String),
    #[error("netlink request for `{name}` failed: {source}")]
    Netlink {
        name: String,
        source: rtnetlink::Error,
    },
}

/// Sets interface `name` up. Runs its own small runtime, so it can be called
/// from a plain thread inside a namespace (see `NetNs::run`).
pub fn set_up_blocking(name: &str) -> Result<(), LinkError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LinkError::Connect)?;
    rt.block_on(set_up(name))
}

pub async fn set_up(name: &str) -> Result<(), LinkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(LinkError::Connect)?;
    let conn = tokio::spawn(connection);
    let result = async {
        let netlink = |source| LinkError::Netlink {
            name: name.to_owned(),
            source,
        };
        let link = handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute()
            .try_next()
            .await
            .map_err(|e| match e {
                rtnetlink::Error::NetlinkError(ref m) if m.raw_code() == -libc::ENODEV => {
                    LinkError::NotFound(name.to_owned())
                }
                e => netlink(e),
            })?
            .ok_or_else(|| LinkError::NotFound(name.to_owned()))?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(link.header.index).up().build())
            .execute()
            .await
            .map_err(netlink)
    }
    .await;
    conn.abort();
    result
}
