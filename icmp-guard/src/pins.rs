//! Layout of the pinned state on bpffs, so that protection and counters outlive the CLI:
//!
//! ```text
//! <pin dir>/maps/<MAP NAME>     every map, shared by every attached interface
//! <pin dir>/links/<ifindex>     one XDP link per attached interface
//! ```

use std::{
    io,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

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
        for name in icmp_guard_common::maps::ALL {
            remove_file_if_present(&self.map_path(name))?;
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

fn remove_file_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(Error::io(format!("removing {}", path.display()), err)),
    }
}
