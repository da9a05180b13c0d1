//! `/exec/{ns}/{pod}/{container}`: a command in a running container, streamed over a
//! WebSocket with the `channel.k8s.io` framing kubectl speaks (client-go
//! tools/remotecommand/websocket.go):
//!
//! - every message is binary; its first byte names the stream: 0 stdin, 1 stdout,
//!   2 stderr, 3 error, 4 resize (`{"Width":w,"Height":h}`);
//! - `v5.channel.k8s.io` adds 255: `[255, id]` says the sender closed stream `id` (kubectl
//!   sends `[255, 0]` at the end of its stdin);
//! - the server ends with one message on stream 3, a metav1.Status (`Success`, or `Failure`
//!   with reason `NonZeroExitCode` and the code as a cause of type `ExitCode`), then a
//!   normal close, which ends the client's readers.
//!
//! The command runs through `skiff runtime exec` (the same runtime binary, so the exec'd
//! process gets the container's namespaces, cgroup, capabilities and seccomp filter), with
//! its stdio on pipes, or on a pty received over a console socket when `tty` is asked.
//! SPDY (`v4.channel.k8s.io` over `SPDY/3.1`) is not served: kubectl 1.37 tries WebSocket
//! first and only falls back to SPDY when the upgrade fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::ContainerInfo;

/// The subprotocols served, most preferred first.
pub const PROTOCOLS: [&str; 2] = [V5, V4];
pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[CLOSE, id]` half-closes stream `id`.
pub const CLOSE: u8 = 255;

/// How long output may still arrive after the command exited (a background child can hold
/// the pipes open forever; upstream's CRI servers stop copying at exit too).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// What the client asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Problems with an exec request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExecError {
    #[error("you must specify at least one command for the container")]
    NoCommand,
    #[error("you must specify at least one of stdin, stdout, stderr")]
    NoStreams,
    #[error("invalid {param} {value:?}: not a boolean")]
    BadFlag { param: String, value: String },
}

fn flag(param: &str, v: &str) -> Result<bool, ExecError> {
    match v {
        "" | "1" | "true" | "True" | "TRUE" | "t" => Ok(true),
        "0" | "false" | "False" | "FALSE" | "f" => Ok(false),
        _ => Err(ExecError::BadFlag {
            param: param.into(),
            value: v.into(),
        }),
    }
}

impl ExecRequest {
    /// From the query: `command` repeats; the streams are `input`/`output`/`error` as
    /// kube-apiserver forwards them, or `stdin`/`stdout`/`stderr` as kubectl names them.
    pub fn from_query(pairs: &[(String, String)]) -> Result<ExecRequest, ExecError> {
        let r = Self::streams(pairs)?;
        if r.command.is_empty() {
            return Err(ExecError::NoCommand);
        }
        Ok(r)
    }

    /// The streams of an attach (no command).
    pub fn attach_from_query(pairs: &[(String, String)]) -> Result<ExecRequest, ExecError> {
        Self::streams(pairs)
    }

    fn streams(pairs: &[(String, String)]) -> Result<ExecRequest, ExecError> {
        let mut r = ExecRequest::default();
        for (k, v) in pairs {
            match k.as_str() {
                "command" => r.command.push(v.clone()),
                "input" | "stdin" => r.stdin = flag(k, v)?,
                "output" | "stdout" => r.stdout = flag(k, v)?,
                "error" | "stderr" => r.stderr = flag(k, v)?,
                "tty" => r.tty = flag(k, v)?,
                _ => {}
            }
        }
        if !(r.stdin || r.stdout || r.stderr) {
            return Err(ExecError::NoStreams);
        }
        // With a tty there is no separate stderr (upstream drops it too).
        if r.tty {
            r.stderr = false;
        }
        Ok(r)
    }
}

/// A message from the client, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Stdin(Bytes),
    /// Stream `id` will send no more (v5 only).
    Close(u8),
    Resize {
        width: u16,
        height: u16,
    },
    /// A stream the server does not read, or an empty message.
    Ignored,
}

/// Decodes one binary message of `protocol`. A resize that is not the expected JSON is an
/// error naming what was received.
pub fn decode(protocol: &str, msg: &[u8]) -> Result<ClientFrame, String> {
    let Some((&id, data)) = msg.split_first() else {
        return Ok(ClientFrame::Ignored);
    };
    Ok(match id {
        STDIN => ClientFrame::Stdin(Bytes::copy_from_slice(data)),
        CLOSE if protocol == V5 => match data.first() {
            Some(&stream) => ClientFrame::Close(stream),
            None => return Err("close signal without a stream id".into()),
        },
        RESIZE => {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Size {
                width: u16,
                height: u16,
            }
            let s: Size = serde_json::from_slice(data)
                .map_err(|e| format!("resize message {:?}: {e}", String::from_utf8_lossy(data)))?;
            ClientFrame::Resize {
                width: s.width,
                height: s.height,
            }
        }
        _ => ClientFrame::Ignored,
    })
}

/// A server message on stream `id`.
pub fn frame(id: u8, data: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(id);
    v.extend_from_slice(data);
    v.into()
}

/// The metav1.Status written on the error stream for an exit code (kubelet's
/// pkg/kubelet/cri/streaming/remotecommand writeStatus).
pub fn exit_status(code: i32) -> serde_json::Value {
    if code == 0 {
        return serde_json::json!({"metadata": {}, "status": "Success"});
    }
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// A Failure status for an error that is not an exit code.
pub fn error_status(message: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    })
}

static NEXT_SOCKET: AtomicU64 = AtomicU64::new(0);

/// Runs the exec on an upgraded connection until the command ends or the client goes.
pub(super) async fn run(
    ws: WebSocket,
    protocol: String,
    req: ExecRequest,
    info: ContainerInfo,
    runtime_binary: PathBuf,
) {
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let status = match start(&req, &info, &runtime_binary).await {
        Ok(proc) => pump(proc, &protocol, &req, &mut stream, &out_tx).await,
        Err(message) => error_status(&message),
    };
    let _ = out_tx
        .send(Message::Binary(frame(ERROR, status.to_string().as_bytes())))
        .await;
    let _ = out_tx
        .send(Message::Close(Some(CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        })))
        .await;
    drop(out_tx);
    let _ = writer.await;
}

/// A started `skiff runtime exec`.
struct Proc {
    child: tokio::process::Child,
    /// With a tty: the pty master (stdin, output and resize all go through it).
    pty: Option<std::fs::File>,
    _socket_dir: Option<SocketDir>,
}

/// The console socket's private directory, removed when the exec ends or fails to start.
struct SocketDir(PathBuf);

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start(req: &ExecRequest, info: &ContainerInfo, runtime: &Path) -> Result<Proc, String> {
    if !info.running {
        return Err(format!(
            "container {} is not running: cannot exec in a stopped container",
            info.container_id
        ));
    }
    let mut cmd = tokio::process::Command::new(runtime);
    cmd.arg("runtime")
        .arg("exec")
        .arg("--root")
        .arg(&info.runtime_root);
    let mut socket_dir = None;
    let mut listener = None;
    if req.tty {
        // A private directory for the console socket: only this kubelet can connect.
        let dir = std::env::temp_dir().join(format!(
            "skiff-exec-{}-{}",
            std::process::id(),
            NEXT_SOCKET.fetch_add(1, Ordering::Relaxed)
        ));
        {
            use std::os::unix::fs::DirBuilderExt;
            // 0700: nobody else may connect and hand us a descriptor.
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let path = dir.join("console.sock");
        socket_dir = Some(SocketDir(dir));
        let l = std::os::unix::net::UnixListener::bind(&path)
            .map_err(|e| format!("bind console socket {}: {e}", path.display()))?;
        cmd.arg("--tty").arg("--console-socket").arg(&path);
        listener = Some(l);
    }
    cmd.arg(&info.container_id).arg("--").args(&req.command);
    let tty = req.tty;
    cmd.stdin(if req.stdin && !tty {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(if req.stdout && !tty {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    // The runtime's own errors go to its stderr: keep it even with a tty, for the status.
    cmd.stderr(Stdio::piped());
    cmd.kill_on_drop(false);
    let mut proc = Proc {
        child: cmd
            .spawn()
            .map_err(|e| format!("start {} runtime exec: {e}", runtime.display()))?,
        pty: None,
        _socket_dir: socket_dir,
    };
    if let Some(l) = listener {
        let received = tokio::task::spawn_blocking(move || receive_pty(&l)).await;
        match received {
            Ok(Ok(f)) => proc.pty = Some(f),
            Ok(Err(e)) => {
                let stderr = read_stderr(&mut proc.child).await;
                return Err(format!("receive the exec's terminal: {e}{stderr}"));
            }
            Err(e) => return Err(format!("receive the exec's terminal: {e}")),
        }
    }
    Ok(proc)
}

async fn read_stderr(child: &mut tokio::process::Child) -> String {
    let _ = child.wait().await;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s).await;
    }
    if s.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", s.trim())
    }
}

/// Accepts the runtime's connection on the console socket and takes the pty master it
/// sends (SCM_RIGHTS), as runc's `--console-socket` protocol does. Gives up after 10 s.
fn receive_pty(listener: &std::os::unix::net::UnixListener) -> std::io::Result<std::fs::File> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    use std::mem::MaybeUninit;
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() > deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the runtime did not connect to the console socket",
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    };
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    rustix::net::recvmsg(&conn, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            if let Some(fd) = fds.next() {
                return Ok(std::fs::File::from(fd));
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "the console socket message carried no file descriptor",
    ))
}

/// Moves bytes until the command exits; returns the status to send.
async fn pump(
    mut proc: Proc,
    protocol: &str,
    req: &ExecRequest,
    client: &mut futures::stream::SplitStream<WebSocket>,
    out: &mpsc::Sender<Message>,
) -> serde_json::Value {
    let mut readers = tokio::task::JoinSet::new();
    let mut stdin_tx: Option<std::sync::mpsc::Sender<Bytes>> = None;
    let mut child_stdin = proc.child.stdin.take();
    let pty_for_resize = proc.pty.as_ref().and_then(|f| f.try_clone().ok());
    if let Some(pty) = proc.pty.take() {
        // The pty master is a blocking descriptor: one thread reads, one writes.
        let reader = pty.try_clone().ok();
        if let (Some(mut reader), true) = (reader, req.stdout) {
            let out = out.clone();
            readers.spawn_blocking(move || {
                use std::io::Read;
                let mut buf = vec![0u8; 32 * 1024];
                // EIO once the last process holding the slave side exits.
                while let Ok(n @ 1..) = reader.read(&mut buf) {
                    if out
                        .blocking_send(Message::Binary(frame(STDOUT, &buf[..n])))
                        .is_err()
                    {
                        break;
                    }
                }
                Vec::new()
            });
        }
        if req.stdin {
            let (tx, rx) = std::sync::mpsc::channel::<Bytes>();
            let mut w = pty;
            std::thread::spawn(move || {
                use std::io::Write;
                while let Ok(b) = rx.recv() {
                    if w.write_all(&b).is_err() {
                        break;
                    }
                }
            });
            stdin_tx = Some(tx);
        }
    }
    for (pipe, id) in [
        (
            proc.child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn AsyncRead>),
            STDOUT,
        ),
        (
            proc.child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn AsyncRead>),
            STDERR,
        ),
    ] {
        let Some(mut pipe) = pipe else { continue };
        let out = out.clone();
        // With a tty the runtime's stderr carries only its own errors: keep them for the
        // status instead of mixing them into the terminal.
        let forward = id == STDOUT || req.stderr;
        readers.spawn(async move {
            let mut kept = Vec::new();
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                if forward {
                    if out
                        .send(Message::Binary(frame(id, &buf[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                } else if kept.len() < 4096 {
                    kept.extend_from_slice(&buf[..n]);
                }
            }
            kept
        });
    }
    let exit = loop {
        tokio::select! {
            status = proc.child.wait() => break status,
            msg = client.next() => match msg {
                Some(Ok(Message::Binary(data))) => match decode(protocol, &data) {
                    Ok(ClientFrame::Stdin(b)) => {
                        if let Some(w) = child_stdin.as_mut() {
                            if w.write_all(&b).await.is_err() {
                                child_stdin = None;
                            }
                        } else if let Some(tx) = &stdin_tx {
                            let _ = tx.send(b);
                        }
                    }
                    Ok(ClientFrame::Close(STDIN)) => {
                        // EOF for the command's stdin. On a tty, EOF is the terminal's
                        // VEOF character (^D), as a terminal user would type it.
                        child_stdin = None;
                        if let Some(tx) = stdin_tx.take() {
                            let _ = tx.send(Bytes::from_static(b"\x04"));
                        }
                    }
                    Ok(ClientFrame::Resize { width, height }) => {
                        if let Some(pty) = &pty_for_resize {
                            let size = rustix::termios::Winsize {
                                ws_row: height,
                                ws_col: width,
                                ws_xpixel: 0,
                                ws_ypixel: 0,
                            };
                            if let Err(e) = rustix::termios::tcsetwinsize(pty, size) {
                                tracing::debug!(error = %e, "exec resize");
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "exec: bad client message"),
                },
                // Text, ping and pong need nothing from us (pongs are automatic).
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The client went: the command loses its stdin, like a closed terminal.
                    child_stdin = None;
                    stdin_tx = None;
                    break proc.child.wait().await;
                }
                Some(Ok(_)) => {}
            }
        }
    };
    drop(child_stdin);
    drop(stdin_tx);
    let mut runtime_errors = Vec::new();
    let drained = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
        while let Some(r) = readers.join_next().await {
            runtime_errors.extend(r.unwrap_or_default());
        }
    })
    .await;
    if drained.is_err() {
        readers.abort_all();
    }
    match exit {
        // With a tty, the runtime's stderr holds only its own failures (the command's
        // output went to the terminal).
        Ok(s) if !s.success() && !runtime_errors.is_empty() => error_status(&format!(
            "exec in container failed: {}",
            String::from_utf8_lossy(&runtime_errors).trim()
        )),
        Ok(s) => match s.code() {
            Some(code) => exit_status(code),
            None => {
                use std::os::unix::process::ExitStatusExt;
                // A signal: report it as the shell would (128 + signal).
                exit_status(128 + s.signal().unwrap_or(0))
            }
        },
        Err(e) => error_status(&format!("wait for the exec: {e}")),
    }
}

trait AsyncRead: tokio::io::AsyncRead + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + Unpin + Send + 'static> AsyncRead for T {}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn request_from_query() {
        let r = ExecRequest::from_query(&q(&[
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo hi"),
            ("input", "1"),
            ("output", "1"),
            ("error", "1"),
        ]))
        .unwrap();
        assert_eq!(r.command, ["sh", "-c", "echo hi"]);
        assert!(r.stdin && r.stdout && r.stderr && !r.tty);
        // kubectl's names, and tty drops stderr.
        let r = ExecRequest::from_query(&q(&[
            ("command", "sh"),
            ("stdout", "true"),
            ("stderr", "true"),
            ("tty", "true"),
        ]))
        .unwrap();
        assert!(r.stdout && r.tty && !r.stderr);
        assert_eq!(
            ExecRequest::from_query(&q(&[("output", "1")])),
            Err(ExecError::NoCommand)
        );
        assert_eq!(
            ExecRequest::from_query(&q(&[("command", "ls")])),
            Err(ExecError::NoStreams)
        );
        assert!(
            ExecRequest::from_query(&q(&[("command", "ls"), ("tty", "yes")]))
                .unwrap_err()
                .to_string()
                .contains("\"yes\"")
        );
    }

    #[test]
    fn v5_channel_framing() {
        assert_eq!(&frame(STDOUT, b"hi")[..], b"\x01hi");
        assert_eq!(
            decode(V5, b"\x00abc").unwrap(),
            ClientFrame::Stdin(Bytes::from_static(b"abc"))
        );
        assert_eq!(decode(V5, &[255, 0]).unwrap(), ClientFrame::Close(0));
        // v4 has no close signal.
        assert_eq!(decode(V4, &[255, 0]).unwrap(), ClientFrame::Ignored);
        assert!(decode(V5, &[255]).is_err());
        assert_eq!(
            decode(V5, b"\x04{\"Width\":120,\"Height\":40}").unwrap(),
            ClientFrame::Resize {
                width: 120,
                height: 40
            }
        );
        let err = decode(V5, b"\x04{\"w\":1}").unwrap_err();
        assert!(err.contains("resize"), "{err}");
        assert_eq!(decode(V5, b"").unwrap(), ClientFrame::Ignored);
    }

    #[test]
    fn statuses() {
        assert_eq!(
            exit_status(0),
            serde_json::json!({"metadata": {}, "status": "Success"})
        );
        let s = exit_status(3);
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(error_status("boom")["message"], "boom");
    }
}
