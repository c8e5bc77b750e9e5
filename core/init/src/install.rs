//! Installing a daemon's read-only mounts as copies only its own user can read.
//!
//! A bind mount keeps the host's owner and mode (the invoker's, 0600 for a key), which no one
//! in the container may change on a read-only mount. So the host binds each read-only mount at
//! a private path, and this copies it to where the daemon expects it: files 0400 and dirs 0500,
//! owned by the daemon's uid; missing parent dirs are made root's, 0755. A copy goes in under a
//! temporary name and is renamed into place (a dir is swapped with the old one in one step),
//! so a reinstall (before a reload) never leaves a half-written file, or none, where the
//! daemon reads.

use bottle_contract::daemons::Install;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Install each of `installs` for `uid` (`None`: keep the init's own user).
pub fn install_all(installs: &[Install], uid: Option<u32>) -> Result<(), String> {
    for i in installs {
        install(Path::new(&i.from), Path::new(&i.to), uid)
            .map_err(|e| format!("cannot install {} at {}: {e}", i.from, i.to))?;
    }
    Ok(())
}

fn install(from: &Path, to: &Path, uid: Option<u32>) -> std::io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = to.with_file_name(format!(".{name}.installing"));
    remove(&tmp)?;
    copy(from, &tmp, uid)?;
    if to.is_dir() && !to.is_symlink() {
        // A dir cannot be renamed over a full one: swap the two in one step, so a daemon
        // (or an ssh it runs) opening a file by path at any moment finds the old copy or the
        // new one, never no dir; then remove the old one.
        let swapped = rustix::fs::renameat_with(
            rustix::fs::CWD,
            &tmp,
            rustix::fs::CWD,
            to,
            rustix::fs::RenameFlags::EXCHANGE,
        );
        if swapped.is_err() {
            // A filesystem without RENAME_EXCHANGE: the old one aside, then the new in.
            let old = to.with_file_name(format!(".{name}.old"));
            remove(&old)?;
            std::fs::rename(to, &old)?;
            std::fs::rename(&tmp, to)?;
            return remove(&old);
        }
        remove(&tmp)
    } else {
        std::fs::rename(&tmp, to)
    }
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            // Installed dirs are 0500: writable again first, or only root could empty them.
            writable(path)?;
            std::fs::remove_dir_all(path)
        }
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn writable(dir: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            writable(&entry.path())?;
        }
    }
    Ok(())
}

/// Copy `from` (a file, or a dir with its files and dirs; links are not followed) to `to`.
fn copy(from: &Path, to: &Path, uid: Option<u32>) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    if meta.is_dir() {
        std::fs::DirBuilder::new().mode(0o700).create(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy(&entry.path(), &to.join(entry.file_name()), uid)?;
        }
        own(to, uid, 0o500)
    } else if meta.is_file() {
        let mut src = std::fs::File::open(from)?;
        let mut dst = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)?;
        std::io::copy(&mut src, &mut dst)?;
        dst.sync_all()?;
        own(to, uid, 0o400)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is neither a file nor a dir", from.display()),
        ))
    }
}

fn own(path: &Path, uid: Option<u32>, mode: u32) -> std::io::Result<()> {
    if let Some(uid) = uid {
        std::os::unix::fs::chown(path, Some(uid), Some(uid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn files_and_dirs_are_copied_read_only_for_their_owner_and_replaced_whole() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("routes.yaml"), "a").unwrap();
        std::fs::write(src.join("sub/x"), "b").unwrap();
        std::fs::write(d.path().join("key.pem"), "k").unwrap();
        let uid = rustix::process::geteuid().as_raw();
        let to_dir = d.path().join("etc/egress");
        let to_key = d.path().join("etc/egress-ca/key.pem");
        let installs = [
            Install {
                from: src.display().to_string(),
                to: to_dir.display().to_string(),
            },
            Install {
                from: d.path().join("key.pem").display().to_string(),
                to: to_key.display().to_string(),
            },
        ];
        install_all(&installs, Some(uid)).unwrap();
        assert_eq!(std::fs::read_to_string(to_dir.join("sub/x")).unwrap(), "b");
        let key = std::fs::metadata(&to_key).unwrap();
        assert_eq!((key.mode() & 0o7777, key.uid()), (0o400, uid));
        assert_eq!(std::fs::metadata(&to_dir).unwrap().mode() & 0o7777, 0o500);
        // Again, with new contents: the old copy is replaced whole.
        std::fs::write(src.join("routes.yaml"), "new").unwrap();
        std::fs::remove_file(src.join("sub/x")).unwrap();
        install_all(&installs, Some(uid)).unwrap();
        assert_eq!(
            std::fs::read_to_string(to_dir.join("routes.yaml")).unwrap(),
            "new"
        );
        assert!(!to_dir.join("sub/x").exists());
        let err = install_all(
            &[Install {
                from: "/nonexistent".into(),
                to: d.path().join("t").display().to_string(),
            }],
            None,
        )
        .unwrap_err();
        assert!(err.contains("cannot install /nonexistent"), "{err}");
    }
}
