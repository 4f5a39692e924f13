//! The file store: where instances live on disk, and the steps that make a file durable.
//!
//! Layout under the data directory:
//! - `incoming/` holds transfers in progress (`*.part`, and `*.inflated` while a deflated one is
//!   checked); anything left there after a crash was never
//!   acknowledged and is removed at start-up.
//! - `dicom/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm` holds stored instances.
//!
//! A file reaches its final name only after its bytes are fsynced: an instance received whole is
//! written as an unnamed file (O_TMPFILE) in its series folder and linked to its name after the
//! fsync; a streamed one is renamed from `incoming/`. The name is durable once the folder is fsynced
//! ([`Store::sync_folder`], which ingest runs once for all the instances committed together), and
//! every directory created on the way is made durable when it is created.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::dicom::uid::{InvalidUid, check};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot prepare the data directory {path}")]
    Prepare { path: PathBuf, source: io::Error },
    // A UID is used as a path component, so it must be a real UID: never `..` or a slash.
    #[error(transparent)]
    InvalidUid(#[from] InvalidUid),
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: io::Error },
}

#[derive(Debug, Clone)]
pub struct Store {
    data_dir: PathBuf,
    incoming_dir: PathBuf,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write `bytes` to a new file at `path` and fsync it.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    io::Write::write_all(&mut file, bytes)?;
    file.sync_all()
}

/// An unnamed file in `dir` holding `bytes`, fsynced (Linux O_TMPFILE).
fn write_unnamed(dir: &Path, bytes: &[u8]) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o666),
    )?;
    let mut file = File::from(fd);
    io::Write::write_all(&mut file, bytes)?;
    file.sync_all()?;
    Ok(file)
}

/// Give an unnamed file the name `target` (linkat through /proc, which needs no privilege,
/// unlike AT_EMPTY_PATH).
fn link_unnamed(file: &File, target: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        fd_path.as_str(),
        rustix::fs::CWD,
        target,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )?;
    Ok(())
}

/// Create `dir` and any missing parents, fsyncing each parent that gained an entry.
fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Another association created it meanwhile; its entry may not be durable yet, so the
        // parent is synced below all the same.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_dir(parent)?;
    Ok(())
}

impl Store {
    /// Prepare the data directory and drop transfers a previous run left unfinished.
    /// Returns the store and how many unfinished transfers were removed.
    pub fn open(data_dir: &Path) -> Result<(Store, usize), StoreError> {
        let incoming_dir = data_dir.join("incoming");
        let prepare = |path: &Path, source| StoreError::Prepare {
            path: path.to_owned(),
            source,
        };
        create_dir_durable(&incoming_dir).map_err(|e| prepare(&incoming_dir, e))?;
        create_dir_durable(&data_dir.join("dicom")).map_err(|e| prepare(data_dir, e))?;
        let mut removed = 0;
        for entry in fs::read_dir(&incoming_dir).map_err(|e| prepare(&incoming_dir, e))? {
            let entry = entry.map_err(|e| prepare(&incoming_dir, e))?;
            if entry
                .path()
                .extension()
                .is_some_and(|e| e == "part" || e == "inflated")
            {
                fs::remove_file(entry.path()).map_err(|e| prepare(&entry.path(), e))?;
                removed += 1;
            }
        }
        Ok((
            Store {
                data_dir: data_dir.to_owned(),
                incoming_dir,
            },
            removed,
        ))
    }

    /// Where a transfer in progress is written; `name` must be unique among concurrent transfers.
    pub fn incoming_path(&self, name: &str) -> PathBuf {
        self.incoming_dir.join(format!("{name}.part"))
    }

    /// The final place of an instance, relative to the data directory.
    pub fn instance_path(
        study: &str,
        series: &str,
        sop_instance: &str,
    ) -> Result<PathBuf, StoreError> {
        check("Study Instance UID", study)?;
        check("Series Instance UID", series)?;
        check("SOP Instance UID", sop_instance)?;
        Ok(PathBuf::from("dicom")
            .join(study)
            .join(series)
            .join(format!("{sop_instance}.dcm")))
    }

    pub fn absolute(&self, relative: &Path) -> PathBuf {
        self.data_dir.join(relative)
    }

    /// Move a fully written and fsynced file to its final place. An existing file of the same
    /// name (a re-sent instance) is replaced atomically. The new name is durable after
    /// [`Store::sync_folder`] of its folder.
    pub fn move_into_place(&self, part: &Path, relative: &Path) -> Result<(), StoreError> {
        let target = self.absolute(relative);
        let dir = target.parent().unwrap_or(&self.data_dir);
        create_dir_durable(dir)
            .and_then(|()| fs::rename(part, &target))
            .map_err(|source| StoreError::Write {
                path: target.clone(),
                source,
            })
    }

    /// Write a complete instance under its final name, its bytes fsynced before it has the name,
    /// so that a crash never leaves part of an instance there. The name is durable after
    /// [`Store::sync_folder`] of its folder. `part` is a free name in `incoming/`, used when the
    /// name is taken (a re-sent instance, replaced atomically) or the file system has no
    /// O_TMPFILE.
    pub fn write_instance(
        &self,
        relative: &Path,
        bytes: &[u8],
        part: &Path,
    ) -> Result<(), StoreError> {
        let target = self.absolute(relative);
        let dir = target.parent().unwrap_or(&self.data_dir);
        let write_error = |source| StoreError::Write {
            path: target.clone(),
            source,
        };
        create_dir_durable(dir).map_err(write_error)?;
        let linked =
            write_unnamed(dir, bytes).and_then(|file| match link_unnamed(&file, &target) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    link_unnamed(&file, part).map(|()| false)
                }
                done => done.map(|()| true),
            });
        match linked {
            Ok(true) => Ok(()),
            Ok(false) => fs::rename(part, &target).map_err(write_error),
            // No O_TMPFILE or no /proc here; a real write error comes back the plain way too.
            Err(_) => write_synced(part, bytes)
                .and_then(|()| fs::rename(part, &target))
                .map_err(write_error),
        }
    }

    /// Make the names placed in a folder (relative to the data directory) durable.
    pub fn sync_folder(&self, relative: &Path) -> Result<(), StoreError> {
        let dir = self.absolute(relative);
        sync_dir(&dir).map_err(|source| StoreError::Write { path: dir, source })
    }

    /// Bytes an unprivileged writer may still use on the data directory's file system.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.data_dir)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Write, fsync and remove a small file: the data directory takes writes now.
    pub fn check_writable(&self) -> io::Result<()> {
        // Unique per call: two readiness probes at once must not remove each other's file.
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let probe = self
            .incoming_dir
            .join(format!("write-check-{}-{n}.part", std::process::id()));
        let mut file = fs::File::create(&probe)?;
        io::Write::write_all(&mut file, b"msnode")?;
        file.sync_all()?;
        fs::remove_file(&probe)
    }

    /// Remove a stored file, then its series and study folders once they are empty.
    pub fn remove_pruning(&self, relative: &Path) -> io::Result<()> {
        match fs::remove_file(self.absolute(relative)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut dir = relative.parent();
        while let Some(d) = dir.filter(|d| d.parent().is_some_and(|p| !p.as_os_str().is_empty())) {
            // Fails when the folder still holds something: then so do its parents.
            if fs::remove_dir(self.absolute(d)).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    /// Remove a stored file that the index no longer points at.
    pub fn remove(&self, relative: &Path) -> io::Result<()> {
        fs::remove_file(self.absolute(relative))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_that_could_escape_the_store_are_refused() {
        for bad in [
            "",
            "..",
            "1..2",
            "../1",
            "1/2",
            ".1",
            "1.",
            &"1".repeat(65),
            "1.2.a",
        ] {
            assert!(check("UID", bad).is_err(), "{bad:?} accepted");
        }
        assert!(check("UID", "1.2.840.10008.5.1.4.1.1.4").is_ok());
    }

    #[test]
    fn leftover_transfers_are_removed_at_open_and_placed_files_survive() {
        let dir = tempfile::tempdir().unwrap();
        let (store, removed) = Store::open(dir.path()).unwrap();
        assert_eq!(removed, 0);
        let part = store.incoming_path("a");
        fs::write(&part, b"complete").unwrap();
        let rel = Store::instance_path("1.2", "1.2.3", "1.2.3.4").unwrap();
        store.move_into_place(&part, &rel).unwrap();
        store.sync_folder(rel.parent().unwrap()).unwrap();
        assert!(!part.exists());
        assert_eq!(fs::read(store.absolute(&rel)).unwrap(), b"complete");

        fs::write(store.incoming_path("b"), b"half").unwrap();
        let (_, removed) = Store::open(dir.path()).unwrap();
        assert_eq!(removed, 1);
        assert!(!store.incoming_path("b").exists());
        assert!(store.absolute(&rel).exists());
    }

    #[test]
    fn an_instance_written_whole_gets_its_name_and_a_resent_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let rel = Store::instance_path("1.2", "1.2.3", "1.2.3.4").unwrap();
        let part = store.incoming_path("a");
        store.write_instance(&rel, b"first", &part).unwrap();
        store.sync_folder(rel.parent().unwrap()).unwrap();
        assert_eq!(fs::read(store.absolute(&rel)).unwrap(), b"first");
        store.write_instance(&rel, b"second", &part).unwrap();
        assert_eq!(fs::read(store.absolute(&rel)).unwrap(), b"second");
        assert!(
            !part.exists(),
            "the replacement went through incoming/ and left nothing"
        );
        let series = store.absolute(rel.parent().unwrap());
        assert_eq!(
            fs::read_dir(series).unwrap().count(),
            1,
            "one file in the series folder"
        );
    }
}
