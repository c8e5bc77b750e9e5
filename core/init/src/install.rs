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

/// Copy `from` (a file, or a dir with its files and dirs) to `to`.
///
/// Inside a dir, a link is followed only when it resolves inside that dir: a Kubernetes
/// ConfigMap or Secret volume holds `key -> ..data/key`, `..data -> ..<timestamp>/`. Entries
/// named `..*` (that volume's bookkeeping) are skipped, so the copy holds the keys alone.
fn copy(from: &Path, to: &Path, uid: Option<u32>) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    if meta.is_dir() {
        let root = std::fs::canonicalize(from)?;
        copy_dir(&root, &root, to, uid, 0)
    } else if meta.is_file() {
        copy_file(from, to, uid)
    } else {
        Err(invalid(format!(
            "{} is neither a file nor a dir",
            from.display()
        )))
    }
}

/// Dirs nested deeper than this are refused (a link back up would recurse for ever).
const MAX_DEPTH: usize = 32;

fn copy_dir(
    root: &Path,
    dir: &Path,
    to: &Path,
    uid: Option<u32>,
    depth: usize,
) -> std::io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(invalid(format!(
            "{} nests dirs deeper than {MAX_DEPTH}",
            root.display()
        )));
    }
    std::fs::DirBuilder::new().mode(0o700).create(to)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b"..") {
            continue;
        }
        let mut path = entry.path();
        let mut meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            let real = std::fs::canonicalize(&path)?;
            if !real.starts_with(root) {
                return Err(invalid(format!(
                    "{} links outside {}",
                    path.display(),
                    root.display()
                )));
            }
            meta = std::fs::metadata(&real)?;
            path = real;
        }
        let dest = to.join(&name);
        if meta.is_dir() {
            copy_dir(root, &path, &dest, uid, depth + 1)?;
        } else if meta.is_file() {
            copy_file(&path, &dest, uid)?;
        } else {
            return Err(invalid(format!(
                "{} is neither a file nor a dir",
                path.display()
            )));
        }
    }
    own(to, uid, 0o500)
}

fn copy_file(from: &Path, to: &Path, uid: Option<u32>) -> std::io::Result<()> {
    let mut src = std::fs::File::open(from)?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    std::io::copy(&mut src, &mut dst)?;
    dst.sync_all()?;
    own(to, uid, 0o400)
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
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

    #[test]
    fn a_kubernetes_volume_is_copied_as_its_keys_and_links_out_are_refused() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        // What the kubelet makes of a ConfigMap with the keys `routes.yaml` and `a`.
        let vol = d.path().join("vol");
        std::fs::create_dir_all(vol.join("..2026_11_28_10_00_00.1")).unwrap();
        std::fs::write(vol.join("..2026_11_28_10_00_00.1/routes.yaml"), "r").unwrap();
        std::fs::write(vol.join("..2026_11_28_10_00_00.1/a"), "a").unwrap();
        symlink("..2026_11_28_10_00_00.1", vol.join("..data")).unwrap();
        symlink("..data/routes.yaml", vol.join("routes.yaml")).unwrap();
        symlink("..data/a", vol.join("a")).unwrap();
        let to = d.path().join("etc/egress");
        let install = |from: &Path| {
            install_all(
                &[Install {
                    from: from.display().to_string(),
                    to: to.display().to_string(),
                }],
                None,
            )
        };
        install(&vol).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&to)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "routes.yaml"]);
        let copied = std::fs::symlink_metadata(to.join("routes.yaml")).unwrap();
        assert!(copied.is_file(), "a copy, not a link");
        assert_eq!(
            std::fs::read_to_string(to.join("routes.yaml")).unwrap(),
            "r"
        );

        // A link out of the dir is refused, not followed.
        std::fs::write(d.path().join("secret"), "s").unwrap();
        symlink("../secret", vol.join("leak")).unwrap();
        let e = install(&vol).unwrap_err();
        assert!(e.contains("links outside"), "{e}");
        std::fs::remove_file(vol.join("leak")).unwrap();
        // A link back up would recurse for ever: refused.
        symlink(".", vol.join("loop")).unwrap();
        let e = install(&vol).unwrap_err();
        assert!(e.contains("deeper than"), "{e}");
    }
}
