//! File locks (flock) that a command waits for without hanging: tried
//! again until they are free or Ctrl-C / SIGTERM comes, with the process
//! that holds them named from /proc/locks (as `lslocks` finds it).

use std::{
    fs::File,
    io::{self, Read as _},
    time::Duration,
};

use nix::{
    fcntl::{Flock, FlockArg},
    sys::stat::{fstat, major, minor},
};

use super::{
    interrupt::{Interrupted, Stop},
    sockets::Holder,
};

/// How often a lock someone holds is tried again.
const RETRY: Duration = Duration::from_millis(50);

/// Why a lock was not taken.
#[derive(Debug)]
pub enum LockWait {
    /// Ctrl-C / SIGTERM while waiting; who held it then, if known.
    Interrupted(Option<Holder>, Interrupted),
    /// Still held by another process when the time allowed ran out.
    TimedOut(Option<Holder>),
    Failed(nix::Error),
}

/// Takes an exclusive flock of `file`, waiting while another process holds
/// it (`waiting` is called once, with who holds it, when it has to wait);
/// Ctrl-C / SIGTERM ends the wait.
pub fn exclusive(
    file: File,
    waiting: impl FnOnce(Option<&Holder>),
) -> Result<Flock<File>, LockWait> {
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => return Ok(lock),
        Err((file, nix::Error::EWOULDBLOCK)) => file,
        Err((_, e)) => return Err(LockWait::Failed(e)),
    };
    let mut holder = holder(&file);
    waiting(holder.as_ref());
    let stop = Stop::new();
    loop {
        if stop.wait(RETRY) {
            return Err(LockWait::Interrupted(holder, Interrupted));
        }
        file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((file, nix::Error::EWOULDBLOCK)) => file,
            Err((_, e)) => return Err(LockWait::Failed(e)),
        };
        if holder.is_none() {
            holder = self::holder(&file);
        }
    }
}

/// As [`exclusive`], giving up after `within` (a caller that must answer
/// in bounded time, such as a CNI plugin a runtime waits for).
pub fn exclusive_within(file: File, within: Duration) -> Result<Flock<File>, LockWait> {
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => return Ok(lock),
        Err((file, nix::Error::EWOULDBLOCK)) => file,
        Err((_, e)) => return Err(LockWait::Failed(e)),
    };
    let stop = Stop::new().duration(Some(within));
    loop {
        if stop.wait(RETRY) {
            let holder = holder(&file);
            return Err(if stop.interrupted() {
                LockWait::Interrupted(holder, Interrupted)
            } else {
                LockWait::TimedOut(holder)
            });
        }
        file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((file, nix::Error::EWOULDBLOCK)) => file,
            Err((_, e)) => return Err(LockWait::Failed(e)),
        };
    }
}

/// The process holding a flock on `file`, from /proc/locks (None when it
/// cannot be told: no such lock, or a process in another PID namespace).
pub fn holder(file: &File) -> Option<Holder> {
    let st = fstat(file).ok()?;
    let mut text = String::new();
    File::open("/proc/locks")
        .ok()?
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    let pid = holder_pid(&text, major(st.st_dev), minor(st.st_dev), st.st_ino)?;
    Some(Holder {
        pid,
        command: command_line(pid).unwrap_or_else(|_| "?".into()),
    })
}

/// In /proc/locks text, the PID of the FLOCK held (not waited for) on the
/// file `maj:min:ino` (device numbers in hex, the inode in decimal).
fn holder_pid(locks: &str, maj: u64, min: u64, ino: u64) -> Option<u32> {
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK ADVISORY WRITE 2345 fe:00:6128894 0 EOF"; a waiter's
        // line has "->" after the number.
        if f.get(1) != Some(&"FLOCK") {
            return None;
        }
        let mut id = f.get(5)?.split(':');
        let (ma, mi, i) = (id.next()?, id.next()?, id.next()?);
        let same = u64::from_str_radix(ma, 16).ok()? == maj
            && u64::from_str_radix(mi, 16).ok()? == min
            && i.parse::<u64>().ok()? == ino;
        // 0 or -1: a holder this PID namespace cannot see.
        same.then(|| f.get(4)?.parse::<u32>().ok().filter(|p| *p > 0))
            .flatten()
    })
}

/// A process's command line, its arguments joined by spaces (at most
/// 4 KiB of it read).
pub fn command_line(pid: u32) -> io::Result<String> {
    let mut raw = Vec::new();
    File::open(format!("/proc/{pid}/cmdline"))?
        .take(4096)
        .read_to_end(&mut raw)?;
    let words: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    if words.is_empty() {
        return Err(io::ErrorKind::NotFound.into());
    }
    Ok(words.join(" "))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn the_holder_is_read_from_proc_locks() {
        let locks = "1: FLOCK  ADVISORY  WRITE 27529 fe:00:6128894 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 31000 00:1a:77 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 00:1a:77 0 EOF\n\
                     3: POSIX  ADVISORY  WRITE 99 00:1a:78 0 EOF\n\
                     4: FLOCK  ADVISORY  WRITE 0 00:1a:79 0 EOF\n";
        assert_eq!(holder_pid(locks, 0, 0x1a, 77), Some(4242));
        assert_eq!(holder_pid(locks, 0xfe, 0, 6128894), Some(27529));
        assert_eq!(holder_pid(locks, 0, 0x1a, 78), None, "not a flock");
        assert_eq!(holder_pid(locks, 0, 0x1a, 79), None, "an invisible pid");
        assert_eq!(holder_pid(locks, 0, 0x1a, 80), None);
    }

    #[test]
    fn a_bounded_wait_gives_up_while_the_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let _first =
            exclusive(File::create(&path).unwrap(), |_| panic!("nobody holds it")).unwrap();
        let t = Instant::now();
        let second = exclusive_within(File::open(&path).unwrap(), Duration::from_millis(200));
        assert!(matches!(second, Err(LockWait::TimedOut(Some(h))) if h.pid == std::process::id()));
        assert!(t.elapsed() >= Duration::from_millis(200));
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_held_lock_names_this_process_and_is_taken_once_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = exclusive(File::create(&path).unwrap(), |_| panic!("nobody holds it")).unwrap();
        let me = holder(&File::open(&path).unwrap()).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(!me.command.is_empty());
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            drop(first);
        });
        let t = Instant::now();
        let mut said = None;
        let second = exclusive(File::open(&path).unwrap(), |h| said = h.cloned());
        assert!(second.is_ok());
        assert_eq!(said.map(|h| h.pid), Some(std::process::id()));
        assert!(t.elapsed() < Duration::from_secs(2));
        release.join().unwrap();
    }
}
