//! Layout of the pinned state on bpffs, so that protection and counters outlive the CLI:
//!
//! ```text
//! <pin dir>/maps/<MAP NAME>                 every map, shared by every attached interface
//! <pin dir>/links/<netns>/<ifindex>         one XDP link per attached interface, under the
//!                                           inode of its network namespace
//! <pin dir>/services/<netns>/<pid>/<name>   the interfaces a `run` service guards (empty
//!                                           directories: bpffs holds nothing else)
//! <pin dir>/multiprog/<netns>/<ifindex>     instead of a link: the program icmp-guard runs
//!                                           as a component of the interface's libxdp
//!                                           dispatcher (`attach --multiprog`)
//! ```
//!
//! Links of older versions sit directly in `links/<ifindex>`, without their namespace;
//! [`PinDir::adopt_legacy_links`] files them under the namespace whose interface runs them.
//!
//! Every directory is created 0700, and a pin path that another user owns or may write is
//! refused ([`PinDir::check_trust`]): `/sys/fs/bpf` is world-writable, and whoever owns a
//! pin directory can remove the links that hold the guard on its interfaces.
//!
//! Commands that change the pinned state (`attach`, `detach`, policy edits) hold an exclusive
//! lock (`flock(2)`, through [`File::lock`]) on the pin directory itself ([`PinDir::lock`]):
//! bpffs holds only directories and BPF objects, so the directory is the one thing to lock,
//! and the kernel releases the lock when its process dies, so a crash never wedges the next
//! command. A wait for the lock ends after [`DEFAULT_LOCK_TIMEOUT`] (or
//! `ICMP_GUARD_LOCK_TIMEOUT` seconds) with an error that names the holder.

use std::{
    fs::{DirBuilder, File, TryLockError},
    io,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{Error, Result};

/// Where pins go unless `--pin-dir` or `ICMP_GUARD_PIN_DIR` says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/icmp-guard";

/// How long a command waits for another one's lock before it gives up.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Seconds to wait for a lock instead of [`DEFAULT_LOCK_TIMEOUT`].
pub const LOCK_TIMEOUT_ENV: &str = "ICMP_GUARD_LOCK_TIMEOUT";

/// Mode of every directory icmp-guard creates: only its owner may list, lock or change it.
const DIR_MODE: u32 = 0o700;

/// A pin directory and the paths inside it.
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
    lock_timeout: Duration,
}

/// One pinned link record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRecord {
    /// The inode of the network namespace of its interface; `None` for a record of an older
    /// version, which did not say.
    pub netns: Option<u64>,
    pub ifindex: u32,
    pub path: PathBuf,
}

/// A `run` service's record of an interface it guards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRecord {
    pub netns: u64,
    pub pid: u32,
    pub interface: String,
}

fn lock_timeout_from_env() -> Duration {
    std::env::var(LOCK_TIMEOUT_ENV)
        .ok()
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map_or(DEFAULT_LOCK_TIMEOUT, Duration::from_secs_f64)
}

impl PinDir {
    /// The pin directory at `root`; lock waits end after `ICMP_GUARD_LOCK_TIMEOUT` seconds
    /// when that is set, else [`DEFAULT_LOCK_TIMEOUT`].
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            lock_timeout: lock_timeout_from_env(),
        }
    }

    /// The same directory with another lock timeout.
    #[must_use]
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
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

    pub fn services_dir(&self) -> PathBuf {
        self.root.join("services")
    }

    /// Where the dispatcher components of every namespace are recorded.
    pub fn members_dir(&self) -> PathBuf {
        self.root.join("multiprog")
    }

    /// The record of (`netns`, `ifindex`) as a component of a libxdp dispatcher.
    pub fn member_path(&self, netns: u64, ifindex: u32) -> PathBuf {
        self.members_dir()
            .join(netns.to_string())
            .join(ifindex.to_string())
    }

    /// True when (`netns`, `ifindex`) runs icmp-guard as a dispatcher component.
    pub fn has_member(&self, netns: u64, ifindex: u32) -> bool {
        self.member_path(netns, ifindex).exists()
    }

    /// Creates the directory of namespace `netns`'s component records, 0700.
    pub fn create_members_dir(&self, netns: u64) -> Result<()> {
        self.create_dir(&self.members_dir().join(netns.to_string()))
    }

    /// Every dispatcher component record, of every namespace, in order.
    pub fn member_records(&self) -> Result<Vec<LinkRecord>> {
        let mut records = Vec::new();
        for (netns, dir) in read_dir_names(&self.members_dir())? {
            let Ok(netns) = netns.parse::<u64>() else {
                continue;
            };
            for (ifindex, path) in read_dir_names(&dir)? {
                if let Ok(ifindex) = ifindex.parse() {
                    records.push(LinkRecord {
                        netns: Some(netns),
                        ifindex,
                        path,
                    });
                }
            }
        }
        records.sort_by_key(|record| (record.netns, record.ifindex));
        Ok(records)
    }

    /// The ifindexes of namespace `netns` that run icmp-guard as a dispatcher component.
    pub fn member_ifindexes(&self, netns: u64) -> Result<Vec<u32>> {
        Ok(self
            .member_records()?
            .into_iter()
            .filter(|record| record.netns == Some(netns))
            .map(|record| record.ifindex)
            .collect())
    }

    /// Removes the component record of (`netns`, `ifindex`) and its namespace's directory
    /// once empty.
    pub fn remove_member(&self, netns: u64, ifindex: u32) -> Result<()> {
        remove_file_if_present(&self.member_path(netns, ifindex))?;
        let dir = self.members_dir().join(netns.to_string());
        if read_dir_names(&dir)?.is_empty() {
            remove_dir_if_present(&dir)?;
        }
        Ok(())
    }

    pub fn map_path(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    /// Where the links of network namespace `netns` are pinned.
    pub fn namespace_links_dir(&self, netns: u64) -> PathBuf {
        self.links_dir().join(netns.to_string())
    }

    /// The link of (`netns`, `ifindex`).
    pub fn link_path(&self, netns: u64, ifindex: u32) -> PathBuf {
        self.namespace_links_dir(netns).join(ifindex.to_string())
    }

    /// Where an older version pinned the link of `ifindex`.
    pub fn legacy_link_path(&self, ifindex: u32) -> PathBuf {
        self.links_dir().join(ifindex.to_string())
    }

    /// True when a link for (`netns`, `ifindex`) is pinned here.
    pub fn has_link(&self, netns: u64, ifindex: u32) -> bool {
        self.link_path(netns, ifindex).exists()
    }

    /// The ifindexes of namespace `netns` with a pinned link, in ascending order.
    pub fn linked_ifindexes(&self, netns: u64) -> Result<Vec<u32>> {
        let mut indexes: Vec<u32> = self
            .link_records()?
            .into_iter()
            .filter(|record| record.netns == Some(netns))
            .map(|record| record.ifindex)
            .collect();
        indexes.sort_unstable();
        Ok(indexes)
    }

    /// Every link record in the pin directory, of every namespace, in order.
    pub fn link_records(&self) -> Result<Vec<LinkRecord>> {
        let mut records = Vec::new();
        for (name, path) in read_dir_names(&self.links_dir())? {
            let Ok(number) = name.parse::<u64>() else {
                continue;
            };
            if path.is_dir() {
                for (ifindex, link) in read_dir_names(&path)? {
                    if let Ok(ifindex) = ifindex.parse() {
                        records.push(LinkRecord {
                            netns: Some(number),
                            ifindex,
                            path: link,
                        });
                    }
                }
            } else if let Ok(ifindex) = u32::try_from(number) {
                records.push(LinkRecord {
                    netns: None,
                    ifindex,
                    path,
                });
            }
        }
        records.sort_by_key(|record| (record.netns, record.ifindex));
        Ok(records)
    }

    /// Creates the directory of namespace `netns`'s links, 0700.
    pub fn create_namespace_links_dir(&self, netns: u64) -> Result<()> {
        self.create_dir(&self.namespace_links_dir(netns))
    }

    /// Files the link record of an older version for `ifindex` under `netns`. The caller
    /// holds the lock and has checked that the link runs on that interface of `netns`.
    pub fn adopt_legacy_link(&self, netns: u64, ifindex: u32) -> Result<()> {
        let to = self.link_path(netns, ifindex);
        self.create_dir(&self.namespace_links_dir(netns))?;
        std::fs::rename(self.legacy_link_path(ifindex), &to)
            .map_err(|err| Error::io(format!("moving the link record to {}", to.display()), err))
    }

    /// True when the maps are pinned, that is when the guard has state here.
    pub fn has_maps(&self) -> bool {
        self.map_path(icmp_guard_common::maps::ICMP_COUNTERS)
            .exists()
    }

    /// Creates the directories, 0700; bpffs allows plain directories. Directories of an
    /// older version (0755) are narrowed to 0700.
    pub fn create(&self) -> Result<()> {
        self.check_trust()?;
        for dir in [self.root.clone(), self.maps_dir(), self.links_dir()] {
            self.create_dir(&dir)?;
        }
        Ok(())
    }

    fn create_dir(&self, dir: &Path) -> Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|err| Error::io(format!("creating {}", dir.display()), err))?;
        let metadata = std::fs::metadata(dir)
            .map_err(|err| Error::io(format!("reading {}", dir.display()), err))?;
        if metadata.permissions().mode() & 0o777 != DIR_MODE {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
                .map_err(|err| Error::io(format!("narrowing {} to 0700", dir.display()), err))?;
        }
        Ok(())
    }

    /// Refuses a pin path that another user could change: every existing component from
    /// `/` down must belong to root or to us; above the pin directory a component may be
    /// writable by others only as a root-owned sticky directory (`/sys/fs/bpf`, `/tmp`),
    /// and the pin directory and everything in it may be written by us alone.
    pub fn check_trust(&self) -> Result<()> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        let trusted_owner = |uid: u32| uid == 0 || uid == euid;
        let mut checked = Vec::new();
        let mut path = PathBuf::new();
        for component in self.root.components() {
            path.push(component);
            let metadata = match std::fs::symlink_metadata(&path) {
                Ok(metadata) => metadata,
                Err(err) if err.kind() == io::ErrorKind::NotFound => break,
                Err(err) => return Err(Error::io(format!("reading {}", path.display()), err)),
            };
            checked.push((path.clone(), metadata));
        }
        for dir in [
            self.maps_dir(),
            self.links_dir(),
            self.services_dir(),
            self.members_dir(),
        ] {
            if let Ok(metadata) = std::fs::symlink_metadata(&dir) {
                checked.push((dir, metadata));
            }
        }
        for (path, metadata) in &checked {
            let inside = path.starts_with(&self.root);
            let mode = metadata.mode() & 0o7777;
            let untrusted = |why: &'static str| Error::UntrustedPinPath {
                path: path.clone(),
                owner: metadata.uid(),
                mode,
                why,
            };
            if !trusted_owner(metadata.uid()) {
                return Err(untrusted("owned by another user"));
            }
            if metadata.file_type().is_symlink() {
                if inside {
                    return Err(untrusted("a symbolic link"));
                }
                continue;
            }
            let others_write = mode & 0o022 != 0;
            let sticky_root = metadata.uid() == 0 && mode & 0o1000 != 0;
            if others_write && (inside || !sticky_root) {
                return Err(untrusted("writable by other users"));
            }
            if inside && metadata.uid() != euid {
                return Err(untrusted("owned by another user"));
            }
        }
        // A symbolic link above the pin directory: its target's path must be trusted too.
        if let Ok(canonical) = self.root.canonicalize()
            && canonical != self.root
        {
            Self::new(canonical).check_trust()?;
        }
        Ok(())
    }

    /// Removes the maps and every directory once no link is left (of any namespace), so
    /// that a full detach leaves nothing behind. Does nothing while a link remains.
    pub fn remove_if_unused(&self) -> Result<()> {
        if !self.link_records()?.is_empty() || !self.member_records()?.is_empty() {
            return Ok(());
        }
        self.remove_maps()?;
        for (_, dir) in read_dir_names(&self.links_dir())? {
            remove_dir_if_present(&dir)?;
        }
        for (_, namespace) in read_dir_names(&self.services_dir())? {
            for (_, service) in read_dir_names(&namespace)? {
                for (_, interface) in read_dir_names(&service)? {
                    remove_dir_if_present(&interface)?;
                }
                remove_dir_if_present(&service)?;
            }
            remove_dir_if_present(&namespace)?;
        }
        for (_, dir) in read_dir_names(&self.members_dir())? {
            remove_dir_if_present(&dir)?;
        }
        for dir in [
            self.maps_dir(),
            self.links_dir(),
            self.services_dir(),
            self.members_dir(),
            self.root.clone(),
        ] {
            remove_dir_if_present(&dir)?;
        }
        Ok(())
    }

    /// Removes every pin in `maps/`, also those of maps another icmp-guard version made.
    pub fn remove_maps(&self) -> Result<()> {
        for (_, path) in read_dir_names(&self.maps_dir())? {
            remove_file_if_present(&path)?;
        }
        Ok(())
    }
}

/// The records of `run` services.
impl PinDir {
    fn service_dir(&self, netns: u64, pid: u32) -> PathBuf {
        self.services_dir()
            .join(netns.to_string())
            .join(pid.to_string())
    }

    /// Records that service `pid` of namespace `netns` guards `interfaces` (replacing what
    /// it recorded before).
    pub fn record_service(&self, netns: u64, pid: u32, interfaces: &[String]) -> Result<()> {
        let dir = self.service_dir(netns, pid);
        self.create_dir(&dir)?;
        for (name, path) in read_dir_names(&dir)? {
            if !interfaces.contains(&name) {
                remove_dir_if_present(&path)?;
            }
        }
        for name in interfaces {
            self.create_dir(&dir.join(name))?;
        }
        Ok(())
    }

    /// Removes the record of service `pid`.
    pub fn forget_service(&self, netns: u64, pid: u32) -> Result<()> {
        let dir = self.service_dir(netns, pid);
        for (_, path) in read_dir_names(&dir)? {
            remove_dir_if_present(&path)?;
        }
        remove_dir_if_present(&dir)?;
        remove_dir_if_present(&self.services_dir().join(netns.to_string()))?;
        remove_dir_if_present(&self.services_dir())
    }

    /// The interfaces services of `netns` say they guard, with the service's pid.
    pub fn service_records(&self, netns: u64) -> Result<Vec<ServiceRecord>> {
        let mut records = Vec::new();
        for (pid, dir) in read_dir_names(&self.services_dir().join(netns.to_string()))? {
            let Ok(pid) = pid.parse() else { continue };
            for (interface, _) in read_dir_names(&dir)? {
                records.push(ServiceRecord {
                    netns,
                    pid,
                    interface,
                });
            }
        }
        records.sort_by(|a, b| (a.pid, &a.interface).cmp(&(b.pid, &b.interface)));
        Ok(records)
    }
}

/// The entries of `dir` by name; none when it does not exist.
fn read_dir_names(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(Error::io(format!("reading {}", dir.display()), err)),
    };
    let mut names: Vec<(String, PathBuf)> = entries
        .filter_map(std::result::Result::ok)
        .filter_map(|entry| Some((entry.file_name().into_string().ok()?, entry.path())))
        .collect();
    names.sort();
    Ok(names)
}

impl PinDir {
    /// Takes the pin directory's exclusive lock, creating the directory first (`attach`).
    /// Waits while another command holds it, up to the lock timeout.
    pub fn lock_creating(&self) -> Result<PinLock> {
        self.check_trust()?;
        let deadline = Instant::now() + self.lock_timeout;
        loop {
            self.create_dir(&self.root)?;
            if let Some(lock) = self.try_lock_existing(deadline)? {
                return Ok(lock);
            }
        }
    }

    /// Takes the pin directory's exclusive lock; `Ok(None)` when the directory does not
    /// exist, that is when there is nothing to lock (`detach` has nothing to do).
    pub fn lock(&self) -> Result<Option<PinLock>> {
        let deadline = Instant::now() + self.lock_timeout;
        loop {
            if !self.root.exists() {
                return Ok(None);
            }
            if let Some(lock) = self.try_lock_existing(deadline)? {
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
    fn try_lock_existing(&self, deadline: Instant) -> Result<Option<PinLock>> {
        let dir = match File::open(&self.root) {
            Ok(dir) => dir,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(Error::io(format!("opening {}", self.root.display()), err));
            }
        };
        lock_until(&dir, &self.root, deadline, self.lock_timeout)?;
        let locked = dir
            .metadata()
            .map_err(|err| Error::io(format!("reading {}", self.root.display()), err))?;
        let current = std::fs::metadata(&self.root).ok();
        let same = current.is_some_and(|current| {
            current.dev() == locked.dev() && current.ino() == locked.ino() && locked.nlink() > 0
        });
        Ok(same.then_some(PinLock { _dir: dir }))
    }

    /// Takes the lock of the `EVENTS` ring buffer's reader, a `flock` on the maps
    /// directory (the pin directory's own lock is the one `attach` and policy edits take).
    /// Without waiting: `Ok(None)` when another reader has it.
    pub fn lock_events(&self) -> Result<Option<PinLock>> {
        let path = self.maps_dir();
        let dir = File::open(&path).map_err(|err| {
            if err.kind() == io::ErrorKind::NotFound {
                Error::NotAttached
            } else {
                Error::io(format!("opening {}", path.display()), err)
            }
        })?;
        match dir.try_lock() {
            Ok(()) => Ok(Some(PinLock { _dir: dir })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(err)) => {
                Err(Error::io(format!("locking {}", path.display()), err))
            }
        }
    }

    /// Who holds the events lock now, as "pid N (command line)", when /proc/locks says.
    pub fn events_holder(&self) -> Option<String> {
        lock_holder(&self.maps_dir())
    }
}

/// Locks `dir` (at `path`), polling until `deadline`; after that the error names the holder.
fn lock_until(dir: &File, path: &Path, deadline: Instant, timeout: Duration) -> Result<()> {
    let mut pause = Duration::from_millis(5);
    loop {
        match dir.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(err)) => {
                return Err(Error::io(format!("locking {}", path.display()), err));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::LockTimeout {
                path: path.to_path_buf(),
                seconds: timeout.as_secs_f64(),
                holder: lock_holder(path)
                    .unwrap_or_else(|| "a process /proc/locks does not show".to_owned()),
            });
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The process holding a `flock` on `path`, as "pid N (command line)", from /proc/locks.
pub fn lock_holder(path: &Path) -> Option<String> {
    let metadata = std::fs::metadata(path).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = holder_pid(&locks, metadata.dev(), metadata.ino())?;
    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|command| !command.is_empty());
    Some(match command {
        Some(command) => format!("pid {pid} ({command})"),
        None => format!("pid {pid}"),
    })
}

/// The pid holding (not waiting for) a FLOCK on the file `dev`:`inode` in a /proc/locks
/// text: `1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF`, with the device as hexadecimal
/// major:minor.
fn holder_pid(locks: &str, dev: u64, inode: u64) -> Option<u32> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Waiters have "->" after the number.
        if fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        let mut file = fields.get(5)?.split(':');
        let (file_major, file_minor, file_inode) = (file.next()?, file.next()?, file.next()?);
        let same = u32::from_str_radix(file_major, 16).ok()? == major
            && u32::from_str_radix(file_minor, 16).ok()? == minor
            && file_inode.parse::<u64>().ok()? == inode;
        if same {
            fields.get(4)?.parse().ok()
        } else {
            None
        }
    })
}

/// A lock of the pin directory (or of the events), released on drop (or by the kernel when
/// the process dies).
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

fn remove_dir_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(Error::io(format!("removing {}", path.display()), err)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

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
    fn a_lock_wait_ends_and_names_the_holder() {
        let pins = scratch("timeout").with_lock_timeout(Duration::from_millis(300));
        let held = pins.lock_creating().expect("locked");
        let started = Instant::now();
        let err = pins.lock().expect_err("times out");
        assert!(started.elapsed() < Duration::from_secs(3));
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("ICMP_GUARD_LOCK_TIMEOUT"), "{text}");
        drop(held);
        std::fs::remove_dir_all(pins.root()).expect("clean up");
    }

    #[test]
    fn proc_locks_lines_are_read_for_holders_not_waiters() {
        let dev = libc::makedev(0, 0x2a);
        let locks = "1: FLOCK  ADVISORY  WRITE 77 00:2a:5678 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 88 00:2a:5678 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 99 00:2a:9999 0 EOF\n";
        assert_eq!(holder_pid(locks, dev, 5678), Some(77));
        assert_eq!(
            holder_pid(locks, dev, 9999),
            None,
            "POSIX locks are not ours"
        );
        assert_eq!(holder_pid(locks, libc::makedev(0, 0x2b), 5678), None);
    }

    #[test]
    fn directories_are_created_0700_and_others_may_not_write_the_path() {
        let pins = scratch("trust");
        pins.create().expect("created");
        for dir in [pins.root().to_path_buf(), pins.maps_dir(), pins.links_dir()] {
            let mode = std::fs::metadata(&dir).expect("exists").mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        std::fs::set_permissions(pins.root(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let err = pins.check_trust().expect_err("world-writable");
        assert!(err.to_string().contains("writable by other users"), "{err}");
        pins.create().expect_err("create refuses too");
        std::fs::set_permissions(pins.root(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        pins.create().expect("an older version's 0755 is narrowed");
        assert_eq!(
            std::fs::metadata(pins.root()).expect("exists").mode() & 0o777,
            0o700
        );
        std::fs::remove_dir_all(pins.root()).expect("clean up");
    }

    #[test]
    fn records_are_keyed_by_namespace_and_legacy_ones_are_found() {
        let pins = scratch("records");
        pins.create().expect("created");
        std::fs::create_dir_all(pins.namespace_links_dir(4026531840)).expect("mkdir");
        std::fs::write(pins.link_path(4026531840, 2), b"").expect("write");
        std::fs::write(pins.legacy_link_path(2), b"").expect("write");
        assert_eq!(pins.linked_ifindexes(4026531840).expect("read"), vec![2]);
        assert_eq!(pins.linked_ifindexes(7).expect("read"), Vec::<u32>::new());
        let records = pins.link_records().expect("read");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].netns, None, "the legacy record sorts first");
        pins.adopt_legacy_link(7, 2).expect("moved");
        assert!(pins.has_link(7, 2));
        assert!(!pins.legacy_link_path(2).exists());
        std::fs::remove_dir_all(pins.root()).expect("clean up");
    }

    #[test]
    fn the_last_removal_takes_maps_of_any_version() {
        let pins = scratch("remove");
        pins.create().expect("created");
        for name in ["CONFIG", "A_MAP_FROM_ANOTHER_VERSION"] {
            std::fs::write(pins.map_path(name), b"").expect("write");
        }
        std::fs::create_dir_all(pins.namespace_links_dir(9)).expect("mkdir");
        std::fs::write(pins.link_path(9, 7), b"").expect("write");
        pins.record_service(9, 1234, &["eth0".to_owned()])
            .expect("recorded");
        pins.remove_if_unused().expect("no error");
        assert!(pins.has_link(9, 7), "kept while a link remains");
        std::fs::remove_file(pins.link_path(9, 7)).expect("unlink");
        pins.remove_if_unused().expect("removed");
        assert!(!pins.root().exists());
    }
}
