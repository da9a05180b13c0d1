//! A netfilter netlink socket (NETLINK_NETFILTER) in the calling thread's network namespace:
//! open, size its buffers, send one datagram, receive one.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};

/// An open NETLINK_NETFILTER socket, bound to a kernel-chosen port id.
#[derive(Debug)]
pub struct NfnlSocket {
    fd: OwnedFd,
}

impl NfnlSocket {
    pub fn open() -> io::Result<NfnlSocket> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(NfnlSocket { fd })
    }

    /// Let one datagram of `bytes` through: a netlink send larger than the socket's send
    /// buffer fails with EMSGSIZE, and a batch must go in one send. SO_SNDBUFFORCE needs
    /// CAP_NET_ADMIN, which writing nf_tables needs anyway.
    pub fn reserve_send(&self, bytes: usize) -> io::Result<()> {
        setsockopt(&self.fd, sockopt::SndBufForce, &(bytes + 64 * 1024))?;
        Ok(())
    }

    /// Room for many error replies (one per failed message) before the kernel drops them.
    pub fn reserve_recv(&self, bytes: usize) -> io::Result<()> {
        setsockopt(&self.fd, sockopt::RcvBufForce, &bytes)?;
        Ok(())
    }

    pub fn send(&self, buf: &[u8]) -> io::Result<()> {
        let n = send(self.fd.as_raw_fd(), buf, MsgFlags::empty())?;
        if n != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("netlink send wrote {n} of {} bytes", buf.len()),
            ));
        }
        Ok(())
    }

    /// One datagram into `buf`; its length.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(recv(self.fd.as_raw_fd(), buf, MsgFlags::empty())?)
    }
}
