//! Who holds a port: the socket bound to it in this thread's network
//! namespace (`/proc/thread-self/net/{tcp,udp}`) and the process whose file
//! descriptors hold that socket, as `ss -lp` finds it.

use std::fs;

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` (pid {})", self.command, self.pid)
    }
}

/// Socket inodes bound to local `port` in a `/proc/net/{tcp,udp}` table
/// (TCP: listening ones only).
fn inodes(table: &str, port: u16, tcp: bool) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local = f.get(1)?;
            let (_, p) = local.split_once(':')?;
            let state = f.get(3)?;
            let inode = f.get(9)?.parse::<u64>().ok()?;
            let listening = !tcp || *state == "0A";
            (u16::from_str_radix(p, 16).ok()? == port && listening && inode != 0).then_some(inode)
        })
        .collect()
}

/// The process holding the socket bound to `port` (TCP when `tcp`, else
/// UDP) in the calling thread's network namespace, if it can be found.
pub fn holder(port: u16, tcp: bool) -> Option<Holder> {
    let table = fs::read_to_string(format!(
        "/proc/thread-self/net/{}",
        if tcp { "tcp" } else { "udp" }
    ))
    .ok()?;
    let wanted = inodes(&table, port, tcp);
    if wanted.is_empty() {
        return None;
    }
    for proc in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = proc.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = fs::read_dir(proc.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            let held = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
                .is_some_and(|ino| wanted.contains(&ino));
            if held {
                let command = fs::read_to_string(proc.path().join("comm"))
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_else(|_| "?".into());
                return Some(Holder { pid, command });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn a_listening_socket_is_found_with_its_process() {
        let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let h = holder(port, true).unwrap();
        assert_eq!(h.pid, std::process::id());
        let u = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = u.local_addr().unwrap().port();
        assert_eq!(holder(port, false).unwrap().pid, std::process::id());
        assert!(holder(1, true).is_none());
    }
}
