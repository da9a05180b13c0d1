//! hostPath volumes: the type checks of upstream's pkg/volume/hostpath (`checkType`). The
//! decision is pure ([`decide`]); [`prepare`] stats the path and creates what the type asks.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What is at a path (following symlinks, as upstream's `os.Stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Missing,
    Directory,
    File,
    Socket,
    CharDevice,
    BlockDevice,
    Other,
}

/// What to do about a hostPath before mounting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Use,
    /// `DirectoryOrCreate` on a missing path: mkdir -p, mode 0755.
    MakeDir,
    /// `FileOrCreate` on a missing path: an empty file, mode 0644 (the parent must exist,
    /// as upstream: it does not create parent directories).
    MakeFile,
}

/// Errors of a hostPath volume; texts are upstream's.
#[derive(Debug, thiserror::Error)]
pub enum HostPathError {
    #[error("hostPath type check failed: {path} is not a {what}")]
    Type { path: PathBuf, what: &'static str },
    #[error("{value} is an invalid volume type")]
    InvalidType { value: String },
    #[error("hostPath {path} must be an absolute path")]
    Relative { path: PathBuf },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The pure check: `type_` as in the API ("" or None = no check).
pub fn decide(path: &Path, type_: Option<&str>, found: Found) -> Result<Action, HostPathError> {
    let not = |what| {
        Err(HostPathError::Type {
            path: path.to_path_buf(),
            what,
        })
    };
    let is = |want: Found, what| {
        if found == want {
            Ok(Action::Use)
        } else {
            not(what)
        }
    };
    match type_.unwrap_or("") {
        "" => Ok(Action::Use),
        "DirectoryOrCreate" if found == Found::Missing => Ok(Action::MakeDir),
        "DirectoryOrCreate" | "Directory" => is(Found::Directory, "directory"),
        "FileOrCreate" if found == Found::Missing => Ok(Action::MakeFile),
        "FileOrCreate" | "File" => is(Found::File, "file"),
        "Socket" => is(Found::Socket, "socket file"),
        "CharDevice" => is(Found::CharDevice, "character device"),
        "BlockDevice" => is(Found::BlockDevice, "block device"),
        other => Err(HostPathError::InvalidType {
            value: other.to_string(),
        }),
    }
}

fn found(path: &Path) -> Found {
    let Ok(meta) = std::fs::metadata(path) else {
        return Found::Missing;
    };
    let t = meta.file_type();
    if t.is_dir() {
        Found::Directory
    } else if t.is_file() {
        Found::File
    } else if t.is_socket() {
        Found::Socket
    } else if t.is_char_device() {
        Found::CharDevice
    } else if t.is_block_device() {
        Found::BlockDevice
    } else {
        Found::Other
    }
}

/// Checks (and for the *OrCreate types creates) a hostPath; returns the path to mount.
pub fn prepare(path: &Path, type_: Option<&str>) -> Result<PathBuf, HostPathError> {
    if !path.is_absolute() {
        return Err(HostPathError::Relative {
            path: path.to_path_buf(),
        });
    }
    match decide(path, type_, found(path))? {
        Action::Use => {}
        Action::MakeDir => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(path)
                .map_err(|source| HostPathError::Io {
                    op: "creating the directory",
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        Action::MakeFile => {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)
                .map_err(|source| HostPathError::Io {
                    op: "creating the file",
                    path: path.to_path_buf(),
                    source,
                })?;
        }
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_table() {
        let p = Path::new("/srv/x");
        use Found::*;
        let ok = [
            (None, Missing, Action::Use),
            (Some(""), Other, Action::Use),
            (Some("DirectoryOrCreate"), Missing, Action::MakeDir),
            (Some("DirectoryOrCreate"), Directory, Action::Use),
            (Some("Directory"), Directory, Action::Use),
            (Some("FileOrCreate"), Missing, Action::MakeFile),
            (Some("FileOrCreate"), File, Action::Use),
            (Some("File"), File, Action::Use),
            (Some("Socket"), Socket, Action::Use),
            (Some("CharDevice"), CharDevice, Action::Use),
            (Some("BlockDevice"), BlockDevice, Action::Use),
        ];
        for (t, f, want) in ok {
            assert_eq!(decide(p, t, f).unwrap(), want, "{t:?} {f:?}");
        }
        let bad = [
            (Some("DirectoryOrCreate"), File, "is not a directory"),
            (Some("Directory"), Missing, "is not a directory"),
            (Some("FileOrCreate"), Directory, "is not a file"),
            (Some("File"), Missing, "is not a file"),
            (Some("Socket"), File, "is not a socket file"),
            (Some("CharDevice"), BlockDevice, "is not a character device"),
            (Some("BlockDevice"), CharDevice, "is not a block device"),
        ];
        for (t, f, want) in bad {
            let err = decide(p, t, f).unwrap_err().to_string();
            assert_eq!(err, format!("hostPath type check failed: /srv/x {want}"));
        }
        assert_eq!(
            decide(p, Some("Dir"), Directory).unwrap_err().to_string(),
            "Dir is an invalid volume type"
        );
    }

    #[test]
    fn prepare_creates_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        prepare(&d, Some("DirectoryOrCreate")).unwrap();
        assert!(d.is_dir());
        let f = dir.path().join("f");
        prepare(&f, Some("FileOrCreate")).unwrap();
        assert!(f.is_file());
        let err = prepare(&dir.path().join("no/parent"), Some("FileOrCreate")).unwrap_err();
        assert!(err.to_string().starts_with("creating the file"), "{err}");
        assert!(prepare(&f, Some("Directory")).is_err());
        assert!(prepare(&d, Some("File")).is_err());
        assert!(prepare(Path::new("/dev/null"), Some("CharDevice")).is_ok());
        assert!(prepare(Path::new("rel"), None).is_err());
    }
}
