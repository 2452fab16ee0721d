//! Layout of the pinned state on bpffs, so that protection and counters outlive the CLI:
//!
//! ```text
//! <pin dir>/maps/<MAP NAME>     every map, shared by every attached interface
//! <pin dir>/links/<ifindex>     one XDP link per attached interface
//! ```
//!
//! Commands that change the pinned state (`attach`, `detach`, policy edits) hold an exclusive
//! lock (`flock(2)`, through [`File::lock`]) on the pin directory itself ([`PinDir::lock`]):
//! bpffs holds only directories and BPF objects, so the directory is the one thing to lock,
//! and the kernel releases the lock when its process dies, so a crash never wedges the next
//! command.

use std::{
    fs::{File, TryLockError},
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::{Error, Result};

/// Where pins go unless `--pin-dir` or `ICMP_GUARD_PIN_DIR` says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/icmp-guard";

/// A pin directory and the paths inside it.
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn map_path(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    pub fn link_path(&self, ifindex: u32) -> PathBuf {
        self.links_dir().join(ifindex.to_string())
    }

    /// True when a link for `ifindex` is pinned here.
    pub fn has_link(&self, ifindex: u32) -> bool {
        self.link_path(ifindex).exists()
    }

    /// The ifindexes with a pinned link, in ascending order.
    pub fn linked_ifindexes(&self) -> Result<Vec<u32>> {
        let entries = match std::fs::read_dir(self.links_dir()) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => {
                return Err(Error::io(
                    format!("reading {}", self.links_dir().display()),
                    err,
                ));
            }
        };
        let mut indexes: Vec<u32> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .collect();
        indexes.sort_unstable();
        Ok(indexes)
    }

    /// Creates the directories; bpffs allows plain directories.
    pub fn create(&self) -> Result<()> {
        for dir in [self.maps_dir(), self.links_dir()] {
            std::fs::create_dir_all(&dir)
                .map_err(|err| Error::io(format!("creating {}", dir.display()), err))?;
        }
        Ok(())
    }

    /// True when the maps are pinned, that is when the guard has state here.
    pub fn has_maps(&self) -> bool {
        self.map_path(icmp_guard_common::maps::ICMP_COUNTERS)
            .exists()
    }

    /// Removes the maps and every directory once no link is left, so that a full detach
    /// leaves nothing behind. Does nothing while a link remains.
    pub fn remove_if_unused(&self) -> Result<()> {
        if !self.linked_ifindexes()?.is_empty() {
            return Ok(());
        }
        // Every pin in maps/, also those of maps another icmp-guard version made.
        match std::fs::read_dir(self.maps_dir()) {
            Ok(entries) => {
                for entry in entries.filter_map(Result::ok) {
                    remove_file_if_present(&entry.path())?;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(Error::io(
                    format!("reading {}", self.maps_dir().display()),
                    err,
                ));
            }
        }
        for dir in [self.maps_dir(), self.links_dir(), self.root.clone()] {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(Error::io(format!("removing {}", dir.display()), err));
                }
            }
        }
        Ok(())
    }
}

impl PinDir {
    /// Takes the pin directory's exclusive lock, creating the directory first (`attach`).
    /// Blocks while another command holds it.
    pub fn lock_creating(&self) -> Result<PinLock> {
        loop {
            std::fs::create_dir_all(&self.root)
                .map_err(|err| Error::io(format!("creating {}", self.root.display()), err))?;
            if let Some(lock) = self.try_lock_existing()? {
                return Ok(lock);
            }
        }
    }

    /// Takes the pin directory's exclusive lock; `Ok(None)` when the directory does not
    /// exist, that is when there is nothing to lock (`detach` has nothing to do).
    pub fn lock(&self) -> Result<Option<PinLock>> {
        loop {
            if !self.root.exists() {
                return Ok(None);
            }
            if let Some(lock) = self.try_lock_existing()? {
                return Ok(Some(lock));
            }
        }
    }

    /// Takes the pin directory's exclusive lock for a command that changes a running guard
    /// (policy edits, lists): [`Error::NotAttached`] when there is no pin directory.
    pub fn lock_attached(&self) -> Result<PinLock> {
        self.lock()?.ok_or(Error::NotAttached)
    }

    /// Locks the directory now at the root path. `Ok(None)` when it vanished, or was removed
    /// (by the last `detach`) and perhaps re-created while we waited: the caller retries on
    /// whatever is there now, so that two commands never hold locks on two different
    /// directories of the same path.
    fn try_lock_existing(&self) -> Result<Option<PinLock>> {
        let dir = match File::open(&self.root) {
            Ok(dir) => dir,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(Error::io(format!("opening {}", self.root.display()), err));
            }
        };
        dir.lock()
            .map_err(|err| Error::io(format!("locking {}", self.root.display()), err))?;
        let locked = dir
            .metadata()
            .map_err(|err| Error::io(format!("reading {}", self.root.display()), err))?;
        let current = std::fs::metadata(&self.root).ok();
        let same = current.is_some_and(|current| {
            current.dev() == locked.dev() && current.ino() == locked.ino() && locked.nlink() > 0
        });
        Ok(same.then_some(PinLock { _dir: dir }))
    }
}

impl PinDir {
    /// Takes the lock of the `EVENTS` ring buffer's reader, a `flock` on the maps
    /// directory (the pin directory's own lock is the one `attach` and policy edits take).
    /// With `wait`, blocks until the other reader lets go; without, `Ok(None)` when another
    /// reader has it.
    pub fn lock_events(&self, wait: bool) -> Result<Option<PinLock>> {
        let path = self.maps_dir();
        let dir = File::open(&path).map_err(|err| {
            if err.kind() == io::ErrorKind::NotFound {
                Error::NotAttached
            } else {
                Error::io(format!("opening {}", path.display()), err)
            }
        })?;
        let locked = if wait {
            dir.lock().map(|()| true)
        } else {
            match dir.try_lock() {
                Ok(()) => Ok(true),
                Err(TryLockError::WouldBlock) => Ok(false),
                Err(TryLockError::Error(err)) => Err(err),
            }
        };
        match locked {
            Ok(true) => Ok(Some(PinLock { _dir: dir })),
            Ok(false) => Ok(None),
            Err(err) => Err(Error::io(format!("locking {}", path.display()), err)),
        }
    }
}

/// The pin directory's exclusive lock, released on drop (or by the kernel when the process
/// dies).
#[derive(Debug)]
pub struct PinLock {
    _dir: File,
}

fn remove_file_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(Error::io(format!("removing {}", path.display()), err)),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::mpsc,
        time::{Duration, Instant},
    };

    use super::*;

    fn scratch(name: &str) -> PinDir {
        let root =
            std::env::temp_dir().join(format!("icmp-guard-pins-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        PinDir::new(root)
    }

    #[test]
    fn a_missing_directory_has_nothing_to_lock() {
        let pins = scratch("missing");
        assert!(pins.lock().expect("no error").is_none());
        assert!(!pins.root().exists(), "lock() creates nothing");
        let lock = pins.lock_creating().expect("locked");
        assert!(pins.root().is_dir());
        drop(lock);
        assert!(pins.lock().expect("no error").is_some());
        std::fs::remove_dir_all(pins.root()).expect("clean up");
    }

    #[test]
    fn a_second_locker_waits_and_follows_a_recreated_directory() {
        let pins = scratch("wait");
        let held = pins.lock_creating().expect("locked");
        let (sender, receiver) = mpsc::channel();
        let waiter = {
            let pins = pins.clone();
            std::thread::spawn(move || {
                let lock = pins.lock_creating().expect("locked");
                sender.send(Instant::now()).expect("send");
                // Still the directory at the path, not the one removed while waiting.
                let ours = std::fs::metadata(pins.root()).expect("exists").ino();
                drop(lock);
                ours
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        assert!(receiver.try_recv().is_err(), "the second locker waits");
        // What the last detach does while holding the lock: remove the directory.
        std::fs::remove_dir(pins.root()).expect("removed");
        let released = Instant::now();
        drop(held);
        let acquired = receiver
            .recv_timeout(Duration::from_secs(5))
            .expect("acquired");
        assert!(acquired >= released);
        let locked_inode = waiter.join().expect("thread");
        assert_eq!(
            std::fs::metadata(pins.root()).expect("re-created").ino(),
            locked_inode
        );
        std::fs::remove_dir_all(pins.root()).expect("clean up");
    }

    #[test]
    fn the_last_removal_takes_maps_of_any_version() {
        let pins = scratch("remove");
        pins.create().expect("created");
        for name in ["CONFIG", "A_MAP_FROM_ANOTHER_VERSION"] {
            std::fs::write(pins.map_path(name), b"").expect("write");
        }
        std::fs::write(pins.link_path(7), b"").expect("write");
        pins.remove_if_unused().expect("no error");
        assert!(pins.has_link(7), "kept while a link remains");
        std::fs::remove_file(pins.link_path(7)).expect("unlink");
        pins.remove_if_unused().expect("removed");
        assert!(!pins.root().exists());
    }
}
