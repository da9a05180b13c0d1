//! Network namespaces: create one pinned by a bind mount, remove it, and run code inside one.
//!
//! `setns(2)` with `CLONE_NEWNET` changes only the calling thread, and a tokio task can move
//! between threads at any `.await`, so code meant for another namespace runs on a fresh OS
//! thread that enters it first and exits when done (it is never reused in the wrong
//! namespace). Sockets keep the namespace they were created in, so an rtnetlink connection
//! opened on that thread talks to that namespace.

use std::fs::{self, File};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("open network namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("enter network namespace {path} (setns)")]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("create network namespace at {path}: {step}")]
    Create {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("remove network namespace {path}: {step}")]
    Remove {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("network namespace thread: {what}")]
    Thread {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the thread working in network namespace {path} panicked")]
    Panicked { path: PathBuf },
}

/// Open a namespace file (`/proc/<pid>/ns/net` or a bind mount of one).
pub fn open(path: &Path) -> Result<File, NetnsError> {
    File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// Move the calling thread into the network namespace at `path`. Only for threads that are
/// dedicated to that namespace (see the module docs); prefer [`run_in`].
fn enter(path: &Path) -> Result<(), NetnsError> {
    let file = open(path)?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
        path: path.to_path_buf(),
        source,
    })
}

/// Run `f` on a new thread inside the network namespace at `path` and wait for it (blocking
/// the calling thread).
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let owned = path.to_path_buf();
    let handle = std::thread::Builder::new()
        .name("skiff-netns".into())
        .spawn(move || -> Result<T, NetnsError> {
            enter(&owned)?;
            Ok(f())
        })
        .map_err(|source| NetnsError::Thread {
            what: "spawn",
            source,
        })?;
    handle.join().map_err(|_| NetnsError::Panicked {
        path: path.to_path_buf(),
    })?
}

/// Run the future made by `f` inside the network namespace at `path`, on a new thread with
/// its own single-threaded tokio runtime and an rtnetlink connection opened in that
/// namespace. Awaiting this does not block the caller's runtime.
pub async fn run_async_in<T, F, Fut>(path: &Path, f: F) -> Result<T, crate::NetError>
where
    T: Send + 'static,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, crate::NetError>>,
{
    let owned = path.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("skiff-netns".into())
        .spawn(move || {
            let result = (|| {
                enter(&owned)?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|source| NetnsError::Thread {
                        what: "build tokio runtime",
                        source,
                    })?;
                rt.block_on(async move {
                    let handle = crate::link::connect()?;
                    f(handle).await
                })
            })();
            let _ = tx.send(result);
        })
        .map_err(|source| NetnsError::Thread {
            what: "spawn",
            source,
        })?;
    rx.await.map_err(|_| NetnsError::Panicked {
        path: path.to_path_buf(),
    })?
}

/// Create a new network namespace and pin it by bind-mounting it onto `path` (created as an
/// empty file), as `ip netns add` does under /run/netns. The caller's own namespace is not
/// changed: the `unshare` happens on a throwaway thread.
pub fn create(path: &Path) -> Result<(), NetnsError> {
    let err = |step: &'static str| {
        let path = path.to_path_buf();
        move |source: io::Error| NetnsError::Create { path, step, source }
    };
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(err("create mount point file"))?;
    let target = path.to_path_buf();
    let made = std::thread::Builder::new()
        .name("skiff-netns-new".into())
        .spawn(move || -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            // /proc/thread-self, not /proc/self: only this thread is in the new namespace.
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        })
        .map_err(err("spawn thread"))?
        .join()
        .map_err(|_| err("thread")(io::Error::other("panicked")))
        .and_then(|r| r.map_err(err("unshare and bind mount")));
    if let Err(e) = made {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// Unpin and remove a namespace made by [`create`]. The namespace itself goes away when the
/// last process and socket in it are gone. A missing `path` is not an error.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    let err = |step: &'static str| {
        let path = path.to_path_buf();
        move |source: io::Error| NetnsError::Remove { path, step, source }
    };
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(err("unmount")(e.into())),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err("remove file")(e)),
    }
}

/// A namespace made by [`create`], removed on drop (for tests and the lab).
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
}

impl Netns {
    pub fn create(path: &Path) -> Result<Self, NetnsError> {
        create(path)?;
        Ok(Netns {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = remove(&self.path) {
            tracing::warn!(error = %e, "netns cleanup");
        }
    }
}
