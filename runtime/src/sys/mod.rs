//! Every raw syscall the runtime makes, each behind one small safe function.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd};

pub use nix::unistd::ForkResult;

/// fork(2). The runtime never starts threads on the create/exec path (no tokio, blocking
/// logging), so the child is a faithful copy that may allocate and run Rust code freely.
pub fn fork() -> nix::Result<ForkResult> {
    // SAFETY: the process is single-threaded here (see above), so no lock can be held by a
    // thread that does not exist in the child; async-signal-safety rules do not apply.
    unsafe { nix::unistd::fork() }
}

/// _exit(2): leaves a forked child without running the parent's atexit handlers or flushing
/// stdio buffers it copied from the parent (which would print their contents twice).
pub fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit takes any int and never returns.
    unsafe { libc::_exit(code) }
}

/// setdomainname(2), which nix does not wrap.
pub fn setdomainname(name: &str) -> nix::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, which live across the call;
    // the kernel copies at most `len` bytes and needs no NUL terminator.
    let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    nix::errno::Errno::result(rc).map(drop)
}

/// ioctl(fd, TIOCSCTTY, 0): makes the terminal on `fd` the session's controlling terminal
/// (tty_ioctl(4)); the caller must be a session leader without one.
pub fn set_controlling_terminal(fd: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument by value and touches no user memory.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    nix::errno::Errno::result(rc).map(drop)
}

/// close_range(first, ~0, CLOSE_RANGE_CLOEXEC): marks every fd from `first` up close-on-exec,
/// so nothing the runtime opened leaks into the user process (runc does the same, CVE-2024-21626
/// was a leaked cgroup directory fd).
pub fn cloexec_from(first: u32) -> nix::Result<()> {
    // SAFETY: close_range only changes flags on this process's descriptors.
    let rc = unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
    nix::errno::Errno::result(rc).map(drop)
}

/// Replaces the process image: execve(2) of an absolute path with argv and envp.
pub fn execve(path: &CString, args: &[CString], env: &[CString]) -> nix::Error {
    match nix::unistd::execve(path, args, env) {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_and_exit_immediately() {
        match fork().unwrap() {
            ForkResult::Child => exit_immediately(7),
            ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 7));
            }
        }
    }
}
