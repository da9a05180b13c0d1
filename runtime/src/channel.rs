//! The typed protocol between the runtime (parent) and the container's setup processes
//! (child): one message enum per direction over a SOCK_SEQPACKET socketpair, so each send is
//! one whole message. Both ends are close-on-exec: the user process never inherits them.

use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, OwnedFd};

/// Largest message: failure reports carry an error chain, nothing is bigger.
const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("creating the setup socketpair")]
    Socketpair(#[source] nix::Error),
    #[error("sending {message} over the setup channel")]
    Send {
        message: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("receiving from the setup channel")]
    Recv(#[source] nix::Error),
    #[error("the container's setup process exited before sending {expected}")]
    Closed { expected: &'static str },
    #[error("expected {expected} on the setup channel, got {got}")]
    Unexpected { expected: &'static str, got: String },
    #[error("undecodable message on the setup channel")]
    Decode(#[source] serde_json::Error),
}

/// Child → parent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ToParent {
    /// The intermediate process unshared a user namespace: write its uid/gid maps.
    UserNamespaceCreated { pid: i32 },
    /// The init process exists (host pid): put it in the cgroup.
    InitForked { pid: i32 },
    /// Mounts are done, pivot_root is next: run prestart and createRuntime hooks now.
    RunCreateRuntimeHooks,
    /// Set up and waiting on exec.fifo (create) or about to exec (exec).
    Ready,
    /// A setup step failed; the process exits after sending this.
    Failed { step: String, error: String },
}

impl ToParent {
    fn name(&self) -> String {
        match self {
            ToParent::UserNamespaceCreated { .. } => "UserNamespaceCreated".into(),
            ToParent::InitForked { .. } => "InitForked".into(),
            ToParent::RunCreateRuntimeHooks => "RunCreateRuntimeHooks".into(),
            ToParent::Ready => "Ready".into(),
            ToParent::Failed { step, error } => format!("Failed at {step}: {error}"),
        }
    }
}

/// Parent → child.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ToChild {
    IdMapsWritten,
    CgroupJoined,
    CreateRuntimeHooksDone,
}

fn send_msg<T: Serialize>(
    fd: &OwnedFd,
    message: &T,
    name: &'static str,
) -> Result<(), ChannelError> {
    let bytes = serde_json::to_vec(message).expect("messages serialize");
    send(fd.as_raw_fd(), &bytes, MsgFlags::empty())
        .map(|_| ())
        .map_err(|source| ChannelError::Send {
            message: name,
            source,
        })
}

fn recv_msg<T: for<'de> Deserialize<'de>>(
    fd: &OwnedFd,
    expected: &'static str,
) -> Result<T, ChannelError> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) => return Err(ChannelError::Closed { expected }),
            Ok(n) => return serde_json::from_slice(&buf[..n]).map_err(ChannelError::Decode),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(ChannelError::Recv(e)),
        }
    }
}

/// Creates the pair. The parent keeps [`ParentEnd`], the forked child [`ChildEnd`]; each
/// side drops the other's end right after fork so a dead peer reads as [`ChannelError::Closed`].
pub fn pair() -> Result<(ParentEnd, ChildEnd), ChannelError> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(ChannelError::Socketpair)?;
    Ok((ParentEnd { fd: a }, ChildEnd { fd: b }))
}

/// The runtime's end.
#[derive(Debug)]
pub struct ParentEnd {
    fd: OwnedFd,
}

impl ParentEnd {
    /// The next report from the child, whatever it is.
    pub fn next(&self) -> Result<ToParent, ChannelError> {
        recv_msg(&self.fd, "its next report")
    }

    /// Waits for a specific report; a failure report or any other message is an error.
    pub fn expect(
        &self,
        expected: &'static str,
        matches: impl Fn(&ToParent) -> bool,
    ) -> Result<ToParent, ChannelError> {
        let message: ToParent = recv_msg(&self.fd, expected)?;
        if matches(&message) {
            Ok(message)
        } else {
            Err(ChannelError::Unexpected {
                expected,
                got: message.name(),
            })
        }
    }

    pub fn id_maps_written(&self) -> Result<(), ChannelError> {
        send_msg(&self.fd, &ToChild::IdMapsWritten, "IdMapsWritten")
    }

    pub fn cgroup_joined(&self) -> Result<(), ChannelError> {
        send_msg(&self.fd, &ToChild::CgroupJoined, "CgroupJoined")
    }

    pub fn create_runtime_hooks_done(&self) -> Result<(), ChannelError> {
        send_msg(
            &self.fd,
            &ToChild::CreateRuntimeHooksDone,
            "CreateRuntimeHooksDone",
        )
    }
}

/// The container side's end (intermediate and init processes).
#[derive(Debug)]
pub struct ChildEnd {
    fd: OwnedFd,
}

impl ChildEnd {
    pub fn user_namespace_created(&self, pid: i32) -> Result<(), ChannelError> {
        send_msg(
            &self.fd,
            &ToParent::UserNamespaceCreated { pid },
            "UserNamespaceCreated",
        )
    }

    pub fn init_forked(&self, pid: i32) -> Result<(), ChannelError> {
        send_msg(&self.fd, &ToParent::InitForked { pid }, "InitForked")
    }

    pub fn run_create_runtime_hooks(&self) -> Result<(), ChannelError> {
        send_msg(
            &self.fd,
            &ToParent::RunCreateRuntimeHooks,
            "RunCreateRuntimeHooks",
        )
    }

    pub fn ready(&self) -> Result<(), ChannelError> {
        send_msg(&self.fd, &ToParent::Ready, "Ready")
    }

    pub fn failed(&self, step: &str, error: &str) -> Result<(), ChannelError> {
        send_msg(
            &self.fd,
            &ToParent::Failed {
                step: step.to_string(),
                error: error.to_string(),
            },
            "Failed",
        )
    }

    fn wait_for(&self, want: ToChild, expected: &'static str) -> Result<(), ChannelError> {
        let got: ToChild = recv_msg(&self.fd, expected)?;
        if got == want {
            Ok(())
        } else {
            Err(ChannelError::Unexpected {
                expected,
                got: format!("{got:?}"),
            })
        }
    }

    pub fn wait_id_maps_written(&self) -> Result<(), ChannelError> {
        self.wait_for(ToChild::IdMapsWritten, "IdMapsWritten")
    }

    pub fn wait_cgroup_joined(&self) -> Result<(), ChannelError> {
        self.wait_for(ToChild::CgroupJoined, "CgroupJoined")
    }

    pub fn wait_create_runtime_hooks_done(&self) -> Result<(), ChannelError> {
        self.wait_for(ToChild::CreateRuntimeHooksDone, "CreateRuntimeHooksDone")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_cross_in_order() {
        let (parent, child) = pair().unwrap();
        child.init_forked(42).unwrap();
        child.failed("mount", "mounts[2]: EPERM").unwrap();
        assert_eq!(parent.next().unwrap(), ToParent::InitForked { pid: 42 });
        let err = parent
            .expect("Ready", |m| *m == ToParent::Ready)
            .unwrap_err();
        assert!(err.to_string().contains("Failed at mount"), "{err}");
        parent.cgroup_joined().unwrap();
        child.wait_cgroup_joined().unwrap();
        parent.id_maps_written().unwrap();
        assert!(matches!(
            child.wait_cgroup_joined(),
            Err(ChannelError::Unexpected { .. })
        ));
    }

    #[test]
    fn a_closed_peer_is_reported() {
        let (parent, child) = pair().unwrap();
        drop(child);
        assert!(matches!(parent.next(), Err(ChannelError::Closed { .. })));
    }
}
