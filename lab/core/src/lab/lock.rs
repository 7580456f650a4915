//! One `lab up` at a time per lab: an exclusive `flock` on `<lab>/lab.lock`.
//!
//! `lab up` (and `lab switch`) take it before anything else and refuse at once when it is held.
//! The supervisor they start inherits the same open file (so the same lock) and holds it as long
//! as the lab runs, which is what makes a detached lab refuse a second `lab up` after the first
//! command has returned. The kernel drops the lock when its last holder dies, SIGKILL included,
//! so a lock is never stale and nobody has to remove it; the file itself is never removed or
//! renamed (the lock lives on its inode).
//!
//! The file's first line names the process that answers for the lab, `<pid> <role>`: `lab up`
//! while the lab comes up (and for its whole life when attached), `supervisor` once a detached
//! lab runs on its own. It only feeds the refusal's message; it is rewritten in place.

use std::fs::File;
use std::io::Read as _;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{FileExt as _, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use fs4::fs_std::FileExt;

use crate::layout::LabLayout;

/// The holder's role once a detached lab's supervisor answers for it alone.
pub const SUPERVISOR_ROLE: &str = "supervisor";

/// The environment variable that tells the supervisor which inherited descriptor is the lock.
pub const LOCK_FD_ENV: &str = "CXL_LAB_LOCK_FD";

#[derive(Debug, thiserror::Error)]
pub enum LabLockError {
    #[error("lab `{lab}` is busy: {holder} holds it ({path})")]
    Busy { lab: String, holder: Holder, path: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the supervisor's inherited lock descriptor {fd} ({LOCK_FD_ENV}) is not {path}")]
    NotInherited { fd: String, path: PathBuf },
}

/// Who holds a lab's lock, from the lock file's first line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub role: String,
}

impl Holder {
    fn parse(text: &str) -> Holder {
        let line = text.lines().next().unwrap_or_default();
        let (pid, role) = line.split_once(' ').unwrap_or((line, ""));
        match pid.parse() {
            Ok(pid) => Holder { pid: Some(pid), role: role.to_owned() },
            Err(_) => Holder { pid: None, role: String::new() },
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.pid, self.role.as_str()) {
            (Some(pid), SUPERVISOR_ROLE) => write!(f, "its supervisor (pid {pid})"),
            (Some(pid), role) => write!(f, "`{role}` (pid {pid})"),
            (None, _) => f.write_str("another process"),
        }
    }
}

/// The held lock of one lab; released when the last process holding it ends.
#[derive(Debug)]
pub struct LabLock {
    file: File,
}

impl LabLock {
    /// Takes the lab's lock for `role` (a command name), or fails at once naming its holder.
    pub fn try_acquire(files: &LabLayout, role: &str) -> Result<LabLock, LabLockError> {
        let path = files.lock_file();
        let io_error = |source| LabLockError::Io { path: path.clone(), source };
        std::fs::create_dir_all(&files.dir).map_err(io_error)?;
        let file = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(io_error)?;
        if !FileExt::try_lock_exclusive(&file).map_err(io_error)? {
            return Err(LabLockError::Busy { lab: files.name.clone(), holder: LabLock::holder(files), path });
        }
        let lock = LabLock { file };
        lock.set_holder(role);
        Ok(lock)
    }

    /// [`LabLock::try_acquire`], retrying for up to `patience` (a holder that is exiting).
    pub fn acquire_within(files: &LabLayout, role: &str, patience: Duration) -> Result<LabLock, LabLockError> {
        let deadline = Instant::now() + patience;
        loop {
            match LabLock::try_acquire(files, role) {
                Err(LabLockError::Busy { .. }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                other => return other,
            }
        }
    }

    /// Who holds the lab's lock, as its holder wrote it.
    pub fn holder(files: &LabLayout) -> Holder {
        let mut text = String::new();
        let _ = File::open(files.lock_file()).and_then(|mut file| file.read_to_string(&mut text));
        Holder::parse(&text)
    }

    /// Names this process, in `role`, as the holder. Written over the first line in place; the
    /// line ends with a newline, so a longer line left from before is ignored by readers.
    pub fn set_holder(&self, role: &str) {
        let line = format!("{} {role}\n", std::process::id());
        if self.file.write_all_at(line.as_bytes(), 0).is_ok() {
            let _ = self.file.set_len(line.len() as u64);
        }
    }

    /// Makes `command`'s process inherit this lock (the same open file, so the same lock) and
    /// tells it which descriptor it is ([`LOCK_FD_ENV`]).
    pub fn inherit_by(&self, command: &mut Command) {
        let fd = self.file.as_raw_fd();
        command.env(LOCK_FD_ENV, fd.to_string());
        // SAFETY: fcntl is async-signal-safe; the closure allocates nothing.
        unsafe {
            command.pre_exec(move || {
                let flags = nix::libc::fcntl(fd, nix::libc::F_GETFD);
                if flags < 0 || nix::libc::fcntl(fd, nix::libc::F_SETFD, flags & !nix::libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// The supervisor's lock: the one `lab up` handed down ([`LabLock::inherit_by`]), checked to
    /// be the lab's lock file and made close-on-exec again (QEMU must not hold the lab); taken
    /// afresh when the supervisor was started by hand.
    pub fn inherited(files: &LabLayout) -> Result<LabLock, LabLockError> {
        let Some(text) = std::env::var_os(LOCK_FD_ENV) else { return LabLock::try_acquire(files, SUPERVISOR_ROLE) };
        let text = text.to_string_lossy().into_owned();
        // Not for the QEMUs this process starts.
        std::env::remove_var(LOCK_FD_ENV);
        let path = files.lock_file();
        let not_inherited = || LabLockError::NotInherited { fd: text.clone(), path: path.clone() };
        let fd: RawFd = text.parse().map_err(|_| not_inherited())?;
        let expected = std::fs::metadata(&path).map_err(|source| LabLockError::Io { path: path.clone(), source })?;
        // Look before taking ownership: a wrong number must not close someone else's descriptor.
        // SAFETY: fstat only writes the buffer it is given; it is read only when the call succeeded.
        let same_file = unsafe {
            let mut stat = std::mem::MaybeUninit::<nix::libc::stat>::uninit();
            nix::libc::fstat(fd, stat.as_mut_ptr()) == 0 && {
                let stat = stat.assume_init();
                stat.st_dev == expected.dev() && stat.st_ino == expected.ino()
            }
        };
        if !same_file {
            return Err(not_inherited());
        }
        // SAFETY: the descriptor is open, is the lab's lock file and nothing else in this process
        // owns it (it came through exec from `lab up`).
        let file = unsafe { File::from_raw_fd(fd) };
        // SAFETY: as above; fcntl on a descriptor we own.
        if unsafe { nix::libc::fcntl(fd, nix::libc::F_SETFD, nix::libc::FD_CLOEXEC) } < 0 {
            return Err(LabLockError::Io { path, source: std::io::Error::last_os_error() });
        }
        // The lock is on the open file we share with `lab up`: taking it again is a no-op, and
        // fails only if it was never ours.
        if !FileExt::try_lock_exclusive(&file).map_err(|source| LabLockError::Io { path: path.clone(), source })? {
            return Err(LabLockError::Busy { lab: files.name.clone(), holder: LabLock::holder(files), path });
        }
        Ok(LabLock { file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    fn lab_files(dir: &std::path::Path) -> LabLayout {
        let paths = Layout { workspace: dir.into(), cache: dir.join("cache"), state: dir.join("state") };
        paths.lab("demo")
    }

    #[test]
    fn a_second_taker_is_refused_with_the_holder_and_gets_it_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let files = lab_files(dir.path());
        let first = LabLock::try_acquire(&files, "lab up").unwrap();
        let error = LabLock::try_acquire(&files, "lab up").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("lab `demo` is busy"), "{message}");
        assert!(message.contains(&format!("`lab up` (pid {})", std::process::id())), "{message}");
        first.set_holder("supervisor");
        assert_eq!(LabLock::holder(&files), Holder { pid: Some(std::process::id()), role: "supervisor".into() });
        drop(first);
        LabLock::try_acquire(&files, "lab switch").unwrap();
    }

    #[test]
    fn holder_lines_parse_and_tolerate_leftovers() {
        assert_eq!(Holder::parse("12 lab up\nisor\n"), Holder { pid: Some(12), role: "lab up".into() });
        assert_eq!(Holder::parse("").to_string(), "another process");
        assert_eq!(Holder::parse("7 supervisor\n").to_string(), "its supervisor (pid 7)");
    }
}
