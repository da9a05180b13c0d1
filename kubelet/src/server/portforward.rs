//! `/portForward/{ns}/{pod}[/{uid}]`: TCP connections to ports inside a pod, as
//! `kubectl port-forward` opens them (pkg/kubelet/cri/streaming/portforward upstream).
//!
//! The transport is SPDY/3.1 ([`super::spdy`]), reached either way kubectl ≥ 1.31 tries:
//! first a WebSocket with subprotocol `SPDY/3.1+portforward.k8s.io` whose binary messages
//! carry the SPDY byte stream (client-go tools/portforward tunneling_dialer.go; upstream's
//! apiserver unwraps it, skiff's apiserver splices bytes so the kubelet unwraps it), then,
//! when that upgrade is refused, a plain `Upgrade: SPDY/3.1` with
//! `X-Stream-Protocol-Version: portforward.k8s.io`.
//!
//! The protocol (`portforward.k8s.io`): for each local connection the client opens two
//! streams whose headers carry `streamType` (`error` or `data`), `port` and `requestID`.
//! Once both streams of a request are there, the kubelet connects to `localhost:port` in
//! the pod's network namespace (as the CRI runtimes do: a server bound to 127.0.0.1 in the
//! pod is reachable), copies bytes both ways on the data stream, writes any failure as text
//! on the error stream, then closes both. kubectl prints that text and, since client-go
//! 1.29, ends the whole port-forward (tools/portforward/portforward.go `handleConnection`
//! closes the connection on any error message) — the kubelet's session itself stays up.
//!
//! Decisions are pure ([`classify`], [`port_of`], [`Pending`]); [`serve`] is the I/O loop.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::spdy::{self, Decoder, Encoder, Frame, Headers};

/// The WebSocket subprotocol of SPDY tunnelled in WebSocket (client-go
/// `constants.WebsocketsSPDYTunnelingPrefix` + `portforward.k8s.io`).
pub const WS_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The `Upgrade` token of a plain SPDY upgrade.
pub const SPDY_UPGRADE: &str = "SPDY/3.1";
/// The port-forward protocol version (`X-Stream-Protocol-Version`).
pub const PROTOCOL_V1: &str = "portforward.k8s.io";
/// The header naming the stream protocol in a SPDY upgrade.
pub const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";

/// How long the second stream of a request may take (upstream's
/// `DefaultStreamCreationTimeout`).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to the pod's port may take (a loopback connect is immediate; this
/// bounds a pod whose namespace is being torn down).
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Read size from the pod's socket, so one data frame stays small.
const CHUNK: usize = 32 * 1024;
/// Frames queued towards the client, and chunks queued towards one pod connection.
const QUEUE: usize = 64;

/// Errors of port forwarding (each names the header, value or port at fault).
#[derive(Debug, thiserror::Error)]
pub enum PortForwardError {
    #[error("{header:?} header is required")]
    MissingHeader { header: &'static str },
    #[error("invalid stream type {value:?}: want \"error\" or \"data\"")]
    InvalidStreamType { value: String },
    #[error("unable to parse {value:?} as a port: {reason}")]
    InvalidPort { value: String, reason: String },
    #[error("port {value:?} must be > 0")]
    ZeroPort { value: String },
    #[error("stream {stream_id} is not a client stream id: they are odd and increasing")]
    StreamId { stream_id: u32 },
    #[error("failed to connect to localhost:{port} inside the pod's network namespace {netns}: {reason}")]
    Dial {
        port: u16,
        netns: PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Spdy(#[from] spdy::SpdyError),
}

/// What a stream is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Error,
    Data,
}

/// A stream's port-forward headers, read from its SYN_STREAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    pub kind: StreamKind,
    pub request_id: String,
    /// The `port` header as sent; checked when the pair is complete, so a bad one is
    /// reported as text on the error stream.
    pub port: Option<String>,
}

/// Reads a new stream's headers (pure). Without `requestID` (clients before 1.6), the pair
/// is guessed as upstream does: the error stream's id, the data stream's id minus 2.
pub fn classify(stream_id: u32, headers: &Headers) -> Result<StreamRequest, PortForwardError> {
    let kind = match headers.get("streamType") {
        None | Some("") => {
            return Err(PortForwardError::MissingHeader {
                header: "streamType",
            })
        }
        Some("error") => StreamKind::Error,
        Some("data") => StreamKind::Data,
        Some(other) => {
            return Err(PortForwardError::InvalidStreamType {
                value: other.to_string(),
            })
        }
    };
    let request_id = match headers.get("requestID").filter(|r| !r.is_empty()) {
        Some(r) => r.to_string(),
        None => match kind {
            StreamKind::Error => stream_id.to_string(),
            StreamKind::Data => stream_id.saturating_sub(2).to_string(),
        },
    };
    Ok(StreamRequest {
        kind,
        request_id,
        port: headers.get("port").map(str::to_string),
    })
}

/// The port a `port` header names (pure): 1–65535, decimal.
pub fn port_of(value: Option<&str>) -> Result<u16, PortForwardError> {
    let value = value
        .filter(|v| !v.is_empty())
        .ok_or(PortForwardError::MissingHeader { header: "port" })?;
    let port: u16 =
        value
            .parse()
            .map_err(|e: std::num::ParseIntError| PortForwardError::InvalidPort {
                value: value.to_string(),
                reason: e.to_string(),
            })?;
    if port == 0 {
        return Err(PortForwardError::ZeroPort {
            value: value.to_string(),
        });
    }
    Ok(port)
}

/// The pod a session forwards into, for messages.
#[derive(Debug, Clone)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Opens a connection to a port of the pod.
pub trait Dial: Send + Sync + 'static {
    type Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn dial(&self, port: u16) -> impl Future<Output = Result<Self::Conn, PortForwardError>> + Send;
}

/// Connects to `localhost:port` inside a network namespace (`/proc/<sandbox pid>/ns/net`).
#[derive(Debug, Clone)]
pub struct NetnsDialer {
    pub netns: PathBuf,
}

impl Dial for NetnsDialer {
    type Conn = tokio::net::TcpStream;

    async fn dial(&self, port: u16) -> Result<tokio::net::TcpStream, PortForwardError> {
        let netns = self.netns.clone();
        let fail = |reason: String| PortForwardError::Dial {
            port,
            netns: self.netns.clone(),
            reason,
        };
        // setns(2) moves only the calling thread; netns::run_in does it on a fresh thread
        // that ends afterwards. The socket keeps the namespace it was created in, so the
        // stream can be used from any tokio worker.
        let joined = tokio::task::spawn_blocking(move || {
            skiff_netlab::netns::run_in(&netns, move || connect_localhost(port))
        })
        .await
        .map_err(|e| fail(format!("the connecting thread failed: {e}")))?;
        let std_stream = joined.map_err(|e| fail(crate::chain(&e)))?.map_err(fail)?;
        std_stream
            .set_nonblocking(true)
            .map_err(|e| fail(e.to_string()))?;
        let _ = std_stream.set_nodelay(true);
        tokio::net::TcpStream::from_std(std_stream).map_err(|e| fail(e.to_string()))
    }
}

/// IPv4 loopback first, then IPv6, as containerd's PortForward does ("localhost").
fn connect_localhost(port: u16) -> Result<std::net::TcpStream, String> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v4_err = match std::net::TcpStream::connect_timeout(&v4, DIAL_TIMEOUT) {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    match std::net::TcpStream::connect_timeout(&v6, DIAL_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(v6_err) => Err(format!("IPv4: {v4_err}; IPv6: {v6_err}")),
    }
}

/// Where the session reads the client's SPDY bytes from.
pub trait ByteSource: Send {
    /// The next chunk; `None` at the end.
    fn recv(&mut self) -> impl Future<Output = Option<io::Result<Bytes>>> + Send;
}

/// Where the session writes SPDY bytes to.
pub trait ByteSink: Send + 'static {
    fn send(&mut self, bytes: Bytes) -> impl Future<Output = io::Result<()>> + Send;
    /// Ends the transport cleanly (WebSocket close, TCP shutdown).
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// The read half of an upgraded HTTP connection (plain SPDY).
pub struct ReadSource<R>(pub R);

impl<R: AsyncRead + Unpin + Send> ByteSource for ReadSource<R> {
    async fn recv(&mut self) -> Option<io::Result<Bytes>> {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        match self.0.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some(Ok(buf.freeze())),
            Err(e) => Some(Err(e)),
        }
    }
}

/// The write half of an upgraded HTTP connection (plain SPDY).
pub struct WriteSink<W>(pub W);

impl<W: AsyncWrite + Unpin + Send + 'static> ByteSink for WriteSink<W> {
    async fn send(&mut self, bytes: Bytes) -> io::Result<()> {
        self.0.write_all(&bytes).await?;
        self.0.flush().await
    }
    async fn close(&mut self) {
        let _ = self.0.shutdown().await;
    }
}

type WsStream = futures::stream::SplitStream<axum::extract::ws::WebSocket>;
type WsSink = futures::stream::SplitSink<axum::extract::ws::WebSocket, axum::extract::ws::Message>;

/// SPDY tunnelled in WebSocket: each binary message is a run of SPDY bytes (frames may
/// straddle messages, client-go's TunnelingConnection reads them as one stream).
pub struct WsSource(pub WsStream);

impl ByteSource for WsSource {
    async fn recv(&mut self) -> Option<io::Result<Bytes>> {
        use axum::extract::ws::Message;
        use futures::StreamExt;
        loop {
            return match self.0.next().await? {
                Ok(Message::Binary(b)) => Some(Ok(b)),
                // Ping/pong are answered by the WebSocket layer.
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                Ok(Message::Close(_)) => None,
                Ok(Message::Text(_)) => Some(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a text message in a SPDY tunnel (only binary messages carry SPDY)",
                ))),
                Err(e) => Some(Err(io::Error::other(e))),
            };
        }
    }
}

pub struct WsByteSink(pub WsSink);

impl ByteSink for WsByteSink {
    async fn send(&mut self, bytes: Bytes) -> io::Result<()> {
        use futures::SinkExt;
        self.0
            .send(axum::extract::ws::Message::Binary(bytes))
            .await
            .map_err(io::Error::other)
    }
    async fn close(&mut self) {
        use axum::extract::ws::{close_code, CloseFrame, Message};
        use futures::SinkExt;
        let _ = self
            .0
            .send(Message::Close(Some(CloseFrame {
                code: close_code::NORMAL,
                reason: "".into(),
            })))
            .await;
        let _ = self.0.close().await;
    }
}

/// Answers `/portForward/{ns}/{pod}[/{uid}]`: 404 for a pod this node does not run (or
/// whose uid differs), 400 when it has no sandbox or the request asks for no protocol this
/// kubelet speaks, else `101 Switching Protocols` and a [`serve`] task.
pub(super) fn handle(
    view: &dyn super::NodeView,
    ns: String,
    pod: String,
    uid: Option<String>,
    ws: Result<
        axum::extract::ws::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
    mut req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http::{header, StatusCode};
    let failure = super::failure;
    let sandbox = view
        .sandbox(&ns, &pod)
        .filter(|s| uid.as_deref().is_none_or(|u| u == s.uid));
    let Some(sandbox) = sandbox else {
        return failure(
            StatusCode::NOT_FOUND,
            format!("pod \"{ns}/{pod}\" not found on this node"),
        );
    };
    let Some(pid) = sandbox.pid else {
        return failure(
            StatusCode::BAD_REQUEST,
            format!("pod \"{ns}/{pod}\" has no running sandbox to forward into"),
        );
    };
    let dial = NetnsDialer {
        netns: PathBuf::from(format!("/proc/{pid}/ns/net")),
    };
    let target = PodRef {
        namespace: ns,
        name: pod,
        uid: sandbox.uid,
    };
    let span =
        tracing::info_span!("port_forward", pod = %format!("{}/{}", target.namespace, target.name));

    if let Ok(ws) = ws {
        let ws = ws.protocols([WS_PROTOCOL]);
        if ws.selected_protocol().is_none() {
            // Not 101: kubectl treats a refused WebSocket upgrade as the cue to retry with
            // plain SPDY.
            return failure(
                StatusCode::BAD_REQUEST,
                format!("port forwarding over WebSocket needs subprotocol {WS_PROTOCOL}"),
            );
        }
        return ws.on_upgrade(move |socket| {
            use futures::StreamExt;
            let (sink, source) = socket.split();
            tracing::debug!(parent: &span, "port-forward session (SPDY in WebSocket)");
            serve(WsSource(source), WsByteSink(sink), dial, target).instrument(span)
        });
    }

    let headers = req.headers();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !upgrade.eq_ignore_ascii_case(SPDY_UPGRADE) {
        return failure(
            StatusCode::BAD_REQUEST,
            format!(
                "port forwarding needs a WebSocket upgrade with subprotocol {WS_PROTOCOL} \
                 or an \"Upgrade: {SPDY_UPGRADE}\" request"
            ),
        );
    }
    let offered: Vec<String> = headers
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if !offered.iter().any(|p| p == PROTOCOL_V1) {
        return failure(
            StatusCode::BAD_REQUEST,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, \
                 server supports [\"{PROTOCOL_V1}\"]"
            ),
        );
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    tracing::debug!("port-forward session (SPDY)");
                    let io = hyper_util::rt::TokioIo::new(upgraded);
                    let (r, w) = tokio::io::split(io);
                    serve(ReadSource(r), WriteSink(w), dial, target).await
                }
                Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
            }
        }
        .instrument(span),
    );
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, "Upgrade"),
            (header::UPGRADE, SPDY_UPGRADE),
            (
                header::HeaderName::from_static("x-stream-protocol-version"),
                PROTOCOL_V1,
            ),
        ],
    )
        .into_response()
}

/// One request (a forwarded connection) while its streams arrive.
#[derive(Debug, Default)]
pub struct Pending {
    pub error_stream: Option<u32>,
    pub data_stream: Option<u32>,
    /// The data stream's `port` header (the error stream's when the data stream has none).
    pub port: Option<String>,
}

impl Pending {
    /// Records a stream (pure). Returns false when the request already has a stream of
    /// that kind (a duplicate the caller resets).
    pub fn add(&mut self, stream_id: u32, req: &StreamRequest) -> bool {
        let slot = match req.kind {
            StreamKind::Error => &mut self.error_stream,
            StreamKind::Data => &mut self.data_stream,
        };
        if slot.is_some() {
            return false;
        }
        *slot = Some(stream_id);
        if req.kind == StreamKind::Data || self.port.is_none() {
            if let Some(p) = &req.port {
                self.port = Some(p.clone());
            }
        }
        true
    }

    /// Both streams, once both are there.
    pub fn complete(&self) -> Option<(u32, u32)> {
        Some((self.error_stream?, self.data_stream?))
    }
}

/// Client → pod direction of one forwarded connection: chunks, then the channel closes at
/// the client's FIN.
type Inbound = mpsc::Receiver<Bytes>;

/// A request the session tracks: pending (streams arriving) or running (forwarding).
struct Request {
    pending: Pending,
    deadline: Instant,
    /// Client → pod chunks; `None` once the client sent FIN or the forwarder went.
    inbound_tx: Option<mpsc::Sender<Bytes>>,
    inbound_rx: Option<Inbound>,
    /// Fired when the client resets the data stream: the forwarder drops the connection.
    reset_tx: Option<oneshot::Sender<()>>,
    running: bool,
}

/// Serves one port-forward connection until the client goes. Forwarded connections still
/// open at that point are dropped.
pub async fn serve<S: ByteSource, K: ByteSink, D: Dial + Clone>(
    source: S,
    sink: K,
    dial: D,
    pod: PodRef,
) {
    serve_with_timeout(source, sink, dial, pod, STREAM_CREATION_TIMEOUT).await
}

/// [`serve`] with the time a request's second stream may take (tests shorten it).
async fn serve_with_timeout<S: ByteSource, K: ByteSink, D: Dial + Clone>(
    mut source: S,
    sink: K,
    dial: D,
    pod: PodRef,
    stream_timeout: Duration,
) {
    let (out, out_rx) = mpsc::channel::<Frame>(QUEUE);
    let writer = tokio::spawn(write_frames(sink, out_rx));
    let mut session = Session {
        out,
        dial,
        pod,
        streams: HashMap::new(),
        requests: HashMap::new(),
        tasks: JoinSet::new(),
        last_stream_id: 0,
        gone_away: false,
        stream_timeout,
    };
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::new();
    'session: loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if !session.on_frame(frame).await {
                        break 'session;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // The header compression context may be out of step: nothing more on
                    // this connection can be trusted.
                    tracing::warn!(error = %crate::chain(&e), "port-forward: bad spdy frame, closing");
                    let _ = session
                        .out
                        .send(Frame::GoAway {
                            last_good_stream_id: session.last_stream_id,
                            status: spdy::status::PROTOCOL_ERROR,
                        })
                        .await;
                    break 'session;
                }
            }
        }
        let next_deadline = session
            .requests
            .values()
            .filter(|r| !r.running)
            .map(|r| r.deadline)
            .min();
        tokio::select! {
            chunk = source.recv() => match chunk {
                Some(Ok(b)) => buf.extend_from_slice(&b),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "port-forward connection ended");
                    break;
                }
                None => break,
            },
            Some(done) = session.tasks.join_next() => {
                if let Ok(request_id) = done {
                    session.finish(&request_id);
                }
            }
            _ = tokio::time::sleep_until(next_deadline.unwrap_or_else(Instant::now)), if next_deadline.is_some() => {
                session.expire().await;
            }
        }
    }
    // Dropping the session aborts the forwarders (their pod connections close) and the
    // last frame sender, so the writer drains and closes the transport.
    drop(session);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

struct Session<D> {
    out: mpsc::Sender<Frame>,
    dial: D,
    pod: PodRef,
    /// stream id → (request id, kind), for streams still open on the client's side.
    streams: HashMap<u32, (String, StreamKind)>,
    requests: HashMap<String, Request>,
    /// Forwarders; each returns its request id.
    tasks: JoinSet<String>,
    last_stream_id: u32,
    gone_away: bool,
    stream_timeout: Duration,
}

impl<D: Dial + Clone> Session<D> {
    /// Handles one frame; false ends the session (the writer is gone).
    async fn on_frame(&mut self, frame: Frame) -> bool {
        match frame {
            Frame::SynStream {
                stream_id,
                fin,
                headers,
                ..
            } => return self.on_syn_stream(stream_id, fin, &headers).await,
            Frame::Data {
                stream_id,
                fin,
                data,
            } => self.on_data(stream_id, fin, data).await,
            Frame::RstStream { stream_id, .. } => self.on_reset(stream_id),
            // spdystream echoes pings of the other parity; kubectl pings every 10 s.
            Frame::Ping { id } => return self.out.send(Frame::Ping { id }).await.is_ok(),
            Frame::GoAway { .. } => self.gone_away = true,
            Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
        true
    }

    async fn on_syn_stream(&mut self, stream_id: u32, fin: bool, headers: &Headers) -> bool {
        let reset = |status| Frame::RstStream { stream_id, status };
        if stream_id.is_multiple_of(2) || stream_id <= self.last_stream_id {
            let e = PortForwardError::StreamId { stream_id };
            tracing::warn!(error = %e, "port-forward: stream refused");
            return self
                .out
                .send(reset(spdy::status::PROTOCOL_ERROR))
                .await
                .is_ok();
        }
        self.last_stream_id = stream_id;
        if self.gone_away {
            return self
                .out
                .send(reset(spdy::status::REFUSED_STREAM))
                .await
                .is_ok();
        }
        let req = match classify(stream_id, headers) {
            Ok(r) => r,
            Err(e) => {
                // No error stream to write to: reset, as upstream's stream handler does.
                tracing::warn!(stream_id, error = %e, "port-forward: stream refused");
                return self
                    .out
                    .send(reset(spdy::status::PROTOCOL_ERROR))
                    .await
                    .is_ok();
            }
        };
        let request = self
            .requests
            .entry(req.request_id.clone())
            .or_insert_with(|| Request {
                pending: Pending::default(),
                deadline: Instant::now() + self.stream_timeout,
                inbound_tx: None,
                inbound_rx: None,
                reset_tx: None,
                running: false,
            });
        if request.running || !request.pending.add(stream_id, &req) {
            tracing::warn!(stream_id, request_id = %req.request_id, kind = ?req.kind,
                "port-forward: a second stream of the same kind for one request, refused");
            return self
                .out
                .send(reset(spdy::status::PROTOCOL_ERROR))
                .await
                .is_ok();
        }
        if req.kind == StreamKind::Data {
            let (tx, rx) = mpsc::channel(QUEUE);
            // A data stream opened with FIN sends nothing: the pod sees EOF at once.
            request.inbound_tx = (!fin).then_some(tx);
            request.inbound_rx = Some(rx);
        }
        self.streams
            .insert(stream_id, (req.request_id.clone(), req.kind));
        // The reply must precede any data on the stream: spdystream drops data on a stream
        // it has no reply for.
        let reply = Frame::SynReply {
            stream_id,
            fin: false,
            headers: Headers::default(),
        };
        if self.out.send(reply).await.is_err() {
            return false;
        }
        self.start_if_complete(&req.request_id);
        true
    }

    fn start_if_complete(&mut self, request_id: &str) {
        let Some(request) = self.requests.get_mut(request_id) else {
            return;
        };
        let Some((error_stream, data_stream)) = request.pending.complete() else {
            return;
        };
        request.running = true;
        let (reset_tx, reset_rx) = oneshot::channel();
        request.reset_tx = Some(reset_tx);
        let inbound = request
            .inbound_rx
            .take()
            .unwrap_or_else(|| mpsc::channel(1).1);
        let job = Forward {
            request_id: request_id.to_string(),
            error_stream,
            data_stream,
            port: request.pending.port.clone(),
            pod: self.pod.clone(),
            out: self.out.clone(),
        };
        let dial = self.dial.clone();
        let span = tracing::debug_span!("forward", request = %request_id, port = ?job.port);
        self.tasks
            .spawn(job.run(dial, inbound, reset_rx).instrument(span));
    }

    async fn on_data(&mut self, stream_id: u32, fin: bool, data: Bytes) {
        let Some((request_id, kind)) = self.streams.get(&stream_id) else {
            return;
        };
        if *kind != StreamKind::Data {
            // kubectl closes its side of the error stream at once and never writes on it.
            return;
        }
        let Some(request) = self.requests.get_mut(request_id) else {
            return;
        };
        if let Some(tx) = &request.inbound_tx {
            // Waits when the pod reads slowly: the whole connection waits, as spdystream's
            // unbuffered per-stream channel makes it upstream.
            if !data.is_empty() && tx.send(data).await.is_err() {
                request.inbound_tx = None;
            }
        }
        if fin {
            request.inbound_tx = None;
        }
    }

    fn on_reset(&mut self, stream_id: u32) {
        let Some((request_id, kind)) = self.streams.remove(&stream_id) else {
            return;
        };
        if kind != StreamKind::Data {
            return;
        }
        let Some(request) = self.requests.get_mut(&request_id) else {
            return;
        };
        request.inbound_tx = None;
        match request.reset_tx.take() {
            Some(reset) => {
                let _ = reset.send(());
            }
            // Reset before its pair was complete: nothing to forward. Its error stream (if
            // any) gets a FIN so the client's reader ends.
            None if !request.running => {
                if let Some(error_stream) = request.pending.error_stream {
                    let _ = self.out.try_send(Frame::fin(error_stream));
                    self.streams.remove(&error_stream);
                }
                self.requests.remove(&request_id);
            }
            None => {}
        }
    }

    /// A forwarder ended: forget its streams.
    fn finish(&mut self, request_id: &str) {
        if let Some(request) = self.requests.remove(request_id) {
            for id in [request.pending.error_stream, request.pending.data_stream]
                .into_iter()
                .flatten()
            {
                self.streams.remove(&id);
            }
        }
    }

    /// Requests whose second stream never came: say so on the error stream, close both.
    async fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .requests
            .iter()
            .filter(|(_, r)| !r.running && r.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for request_id in expired {
            let Some(request) = self.requests.remove(&request_id) else {
                continue;
            };
            tracing::warn!(%request_id, "port-forward: timed out waiting for the request's second stream");
            if let Some(e) = request.pending.error_stream {
                let text = format!("timed out waiting for the data stream of request {request_id}");
                let _ = self.out.send(Frame::data(e, text)).await;
                let _ = self.out.send(Frame::fin(e)).await;
                self.streams.remove(&e);
            }
            if let Some(d) = request.pending.data_stream {
                let _ = self.out.send(Frame::fin(d)).await;
                self.streams.remove(&d);
            }
        }
    }
}

/// One forwarded connection.
struct Forward {
    request_id: String,
    error_stream: u32,
    data_stream: u32,
    port: Option<String>,
    pod: PodRef,
    out: mpsc::Sender<Frame>,
}

impl Forward {
    async fn run<D: Dial>(self, dial: D, inbound: Inbound, reset: oneshot::Receiver<()>) -> String {
        let result = match port_of(self.port.as_deref()) {
            Ok(port) => {
                match tokio::time::timeout(DIAL_TIMEOUT + Duration::from_secs(5), dial.dial(port))
                    .await
                {
                    Ok(Ok(conn)) => {
                        self.pipe(conn, inbound, reset).await;
                        Ok(())
                    }
                    Ok(Err(e)) => Err((Some(port), e.to_string())),
                    Err(_) => Err((Some(port), format!("connecting to port {port} timed out"))),
                }
            }
            Err(e) => Err((None, e.to_string())),
        };
        // Upstream order: the error text, then FIN on the error stream, then on the data
        // stream (extra FINs on a stream the client reset are ignored by spdystream).
        if let Err((port, reason)) = result {
            let port = port
                .map(|p| p.to_string())
                .unwrap_or_else(|| format!("{:?}", self.port.as_deref().unwrap_or("")));
            let text = format!(
                "error forwarding port {port} to pod {}/{}, uid {}: {reason}",
                self.pod.namespace, self.pod.name, self.pod.uid
            );
            tracing::info!(error = %text, "port-forward failed");
            let _ = self.out.send(Frame::data(self.error_stream, text)).await;
            let _ = self.out.send(Frame::fin(self.data_stream)).await;
        }
        let _ = self.out.send(Frame::fin(self.error_stream)).await;
        self.request_id
    }

    /// Copies both ways until the pod's side is done and the client's side is done (FIN or
    /// reset). A reset drops the connection at once.
    async fn pipe<C: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: C,
        mut inbound: Inbound,
        reset: oneshot::Receiver<()>,
    ) {
        let (mut pod_r, mut pod_w) = tokio::io::split(conn);
        let to_pod = async {
            let mut writable = true;
            while let Some(chunk) = inbound.recv().await {
                // After a write error keep draining, so the session never waits on us.
                if writable && pod_w.write_all(&chunk).await.is_err() {
                    writable = false;
                }
            }
            // The client's FIN: half-close towards the pod, which may still answer.
            if writable {
                let _ = pod_w.shutdown().await;
            }
        };
        let to_client = async {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match pod_r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let frame =
                            Frame::data(self.data_stream, Bytes::copy_from_slice(&buf[..n]));
                        if self.out.send(frame).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = self.out.send(Frame::fin(self.data_stream)).await;
        };
        tokio::select! {
            _ = async { tokio::join!(to_pod, to_client) } => {}
            _ = reset => {}
        }
    }
}

/// Encodes queued frames onto the transport; ends when every sender is gone or the
/// transport fails, then closes the transport.
async fn write_frames<K: ByteSink>(mut sink: K, mut frames: mpsc::Receiver<Frame>) {
    let mut encoder = Encoder::new();
    let mut buf = BytesMut::new();
    while let Some(frame) = frames.recv().await {
        if let Err(e) = encoder.encode(&frame, &mut buf) {
            tracing::warn!(error = %crate::chain(&e), "port-forward: cannot encode a frame");
            break;
        }
        // Batch what is already queued into one write (one WebSocket message).
        while buf.len() < CHUNK {
            let Ok(next) = frames.try_recv() else { break };
            if let Err(e) = encoder.encode(&next, &mut buf) {
                tracing::warn!(error = %crate::chain(&e), "port-forward: cannot encode a frame");
                return sink.close().await;
            }
        }
        if let Err(e) = sink.send(buf.split().freeze()).await {
            tracing::debug!(error = %e, "port-forward: the client went");
            break;
        }
    }
    sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn streams_are_classified_by_their_headers() {
        let r = classify(
            1,
            &headers(&[("streamtype", "error"), ("port", "80"), ("requestid", "4")]),
        )
        .unwrap();
        assert_eq!(
            r,
            StreamRequest {
                kind: StreamKind::Error,
                request_id: "4".into(),
                port: Some("80".into())
            }
        );
        // No requestID: the pair is guessed from the ids (error 5, data 7 → request "5").
        let e = classify(5, &headers(&[("streamtype", "error"), ("port", "80")])).unwrap();
        let d = classify(7, &headers(&[("streamtype", "data"), ("port", "80")])).unwrap();
        assert_eq!((e.request_id.as_str(), d.request_id.as_str()), ("5", "5"));
        assert_eq!(
            classify(1, &headers(&[("port", "80")]))
                .unwrap_err()
                .to_string(),
            "\"streamType\" header is required"
        );
        assert_eq!(
            classify(1, &headers(&[("streamtype", "stdin")]))
                .unwrap_err()
                .to_string(),
            "invalid stream type \"stdin\": want \"error\" or \"data\""
        );
    }

    #[test]
    fn ports_are_checked() {
        assert_eq!(port_of(Some("8080")).unwrap(), 8080);
        assert_eq!(
            port_of(None).unwrap_err().to_string(),
            "\"port\" header is required"
        );
        assert_eq!(
            port_of(Some("http")).unwrap_err().to_string(),
            "unable to parse \"http\" as a port: invalid digit found in string"
        );
        assert_eq!(
            port_of(Some("70000")).unwrap_err().to_string(),
            "unable to parse \"70000\" as a port: number too large to fit in target type"
        );
        assert_eq!(
            port_of(Some("0")).unwrap_err().to_string(),
            "port \"0\" must be > 0"
        );
    }

    /// A pod in memory: port 80 answers "echo: " + everything read, then closes; any
    /// other port refuses.
    #[derive(Clone)]
    struct MemPod;

    impl Dial for MemPod {
        type Conn = tokio::io::DuplexStream;
        async fn dial(&self, port: u16) -> Result<Self::Conn, PortForwardError> {
            if port != 80 {
                return Err(PortForwardError::Dial {
                    port,
                    netns: "/proc/1/ns/net".into(),
                    reason: "IPv4: Connection refused (os error 111)".into(),
                });
            }
            let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let mut got = Vec::new();
                let _ = theirs.read_to_end(&mut got).await;
                let mut answer = b"echo: ".to_vec();
                answer.extend_from_slice(&got);
                let _ = theirs.write_all(&answer).await;
                let _ = theirs.shutdown().await;
            });
            Ok(ours)
        }
    }

    /// kubectl's side of a session, speaking SPDY over an in-memory pipe.
    struct Client {
        io: tokio::io::DuplexStream,
        enc: Encoder,
        dec: Decoder,
        buf: BytesMut,
    }

    impl Client {
        fn start() -> Client {
            Self::start_with_timeout(STREAM_CREATION_TIMEOUT)
        }

        fn start_with_timeout(stream_timeout: Duration) -> Client {
            let (client, server) = tokio::io::duplex(256 * 1024);
            let (r, w) = tokio::io::split(server);
            let pod = PodRef {
                namespace: "default".into(),
                name: "web".into(),
                uid: "u1".into(),
            };
            tokio::spawn(serve_with_timeout(
                ReadSource(r),
                WriteSink(w),
                MemPod,
                pod,
                stream_timeout,
            ));
            Client {
                io: client,
                enc: Encoder::new(),
                dec: Decoder::new(),
                buf: BytesMut::new(),
            }
        }

        async fn send(&mut self, frame: Frame) {
            let mut out = BytesMut::new();
            self.enc.encode(&frame, &mut out).unwrap();
            self.io.write_all(&out).await.unwrap();
        }

        async fn open(&mut self, id: u32, kind: &str, port: &str, request: &str) {
            self.send(Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: headers(&[("streamtype", kind), ("port", port), ("requestid", request)]),
            })
            .await;
        }

        async fn next(&mut self) -> Frame {
            loop {
                if let Some(f) = self.dec.decode(&mut self.buf).unwrap() {
                    return f;
                }
                let n =
                    tokio::time::timeout(Duration::from_secs(10), self.io.read_buf(&mut self.buf))
                        .await
                        .expect("a frame within 10 s")
                        .unwrap();
                assert!(n > 0, "the session closed");
            }
        }

        /// Frames until `stream` is finished by the kubelet; returns its data and every
        /// frame seen.
        async fn until_fin(&mut self, stream: u32, seen: &mut Vec<Frame>) -> Vec<u8> {
            let mut data = Vec::new();
            loop {
                let f = self.next().await;
                seen.push(f.clone());
                if let Frame::Data {
                    stream_id,
                    fin,
                    data: d,
                } = f
                {
                    if stream_id == stream {
                        data.extend_from_slice(&d);
                        if fin {
                            return data;
                        }
                    }
                }
            }
        }
    }

    fn reply(stream_id: u32) -> Frame {
        Frame::SynReply {
            stream_id,
            fin: false,
            headers: Headers::default(),
        }
    }

    #[tokio::test]
    async fn a_forwarded_connection_round_trips() {
        let mut c = Client::start();
        c.open(1, "error", "80", "0").await;
        c.send(Frame::fin(1)).await; // kubectl closes its side of the error stream at once
        c.open(3, "data", "80", "0").await;
        assert_eq!(c.next().await, reply(1));
        assert_eq!(c.next().await, reply(3));
        c.send(Frame::data(3, &b"ping"[..])).await;
        c.send(Frame::fin(3)).await;
        let mut seen = Vec::new();
        assert_eq!(c.until_fin(3, &mut seen).await, b"echo: ping");
        assert_eq!(c.until_fin(1, &mut seen).await, b"", "no error text");
        // The session stays: pings are answered, the next request works.
        c.send(Frame::Ping { id: 1 }).await;
        assert_eq!(c.next().await, Frame::Ping { id: 1 });
        c.open(5, "error", "80", "1").await;
        c.open(7, "data", "80", "1").await;
        c.send(Frame::data(7, &b"again"[..])).await;
        c.send(Frame::fin(7)).await;
        let mut seen = Vec::new();
        assert_eq!(c.until_fin(7, &mut seen).await, b"echo: again");
    }

    #[tokio::test]
    async fn two_connections_at_once_keep_their_bytes_apart() {
        let mut c = Client::start();
        c.open(1, "error", "80", "0").await;
        c.open(3, "error", "80", "1").await;
        c.open(5, "data", "80", "1").await;
        c.open(7, "data", "80", "0").await;
        c.send(Frame::data(7, &b"zero"[..])).await;
        c.send(Frame::data(5, &b"one"[..])).await;
        c.send(Frame::fin(5)).await;
        c.send(Frame::fin(7)).await;
        let mut seen = Vec::new();
        let mut got = HashMap::new();
        for id in [5, 7] {
            got.insert(id, c.until_fin(id, &mut seen).await);
        }
        assert_eq!(got[&7], b"echo: zero");
        assert_eq!(got[&5], b"echo: one");
    }

    #[tokio::test]
    async fn failures_are_written_on_the_error_stream() {
        let mut c = Client::start();
        // Nothing listens on 81.
        c.open(1, "error", "81", "0").await;
        c.open(3, "data", "81", "0").await;
        let mut seen = Vec::new();
        let text = c.until_fin(1, &mut seen).await;
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "error forwarding port 81 to pod default/web, uid u1: failed to connect to \
             localhost:81 inside the pod's network namespace /proc/1/ns/net: IPv4: \
             Connection refused (os error 111)"
        );
        assert!(
            seen.contains(&Frame::fin(3)),
            "the data stream is closed too: {seen:?}"
        );
        // A port header that is no port.
        c.open(5, "error", "http", "1").await;
        c.open(7, "data", "http", "1").await;
        let text = c.until_fin(5, &mut seen).await;
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "error forwarding port \"http\" to pod default/web, uid u1: unable to parse \
             \"http\" as a port: invalid digit found in string"
        );
    }

    #[tokio::test]
    async fn bad_streams_are_reset() {
        let mut c = Client::start();
        c.open(1, "stdin", "80", "0").await;
        assert_eq!(
            c.next().await,
            Frame::RstStream {
                stream_id: 1,
                status: spdy::status::PROTOCOL_ERROR
            }
        );
        // Ids are odd and increasing.
        c.open(4, "error", "80", "0").await;
        assert_eq!(
            c.next().await,
            Frame::RstStream {
                stream_id: 4,
                status: spdy::status::PROTOCOL_ERROR
            }
        );
        c.open(1, "error", "80", "0").await;
        assert!(matches!(
            c.next().await,
            Frame::RstStream { stream_id: 1, .. }
        ));
    }

    #[tokio::test]
    async fn a_reset_data_stream_still_closes_the_error_stream() {
        let mut c = Client::start();
        c.open(1, "error", "80", "0").await;
        c.open(3, "data", "80", "0").await;
        assert_eq!(c.next().await, reply(1));
        assert_eq!(c.next().await, reply(3));
        // kubectl resets the data stream when its remote copy ends, then waits for EOF on
        // the error stream.
        c.send(Frame::RstStream {
            stream_id: 3,
            status: spdy::status::CANCEL,
        })
        .await;
        let mut seen = Vec::new();
        assert_eq!(c.until_fin(1, &mut seen).await, b"");
    }

    #[tokio::test]
    async fn a_request_missing_its_data_stream_times_out() {
        let mut c = Client::start_with_timeout(Duration::from_secs(1));
        c.open(1, "error", "80", "0").await;
        assert_eq!(c.next().await, reply(1));
        let mut seen = Vec::new();
        assert_eq!(
            c.until_fin(1, &mut seen).await,
            b"timed out waiting for the data stream of request 0"
        );
        // The session goes on: a later, complete request is served.
        c.open(3, "error", "80", "1").await;
        c.open(5, "data", "80", "1").await;
        c.send(Frame::fin(5)).await;
        assert_eq!(c.until_fin(5, &mut seen).await, b"echo: ");
    }

    /// A node with one pod, `default/web` (uid u1), whose sandbox pid is `pid`.
    struct OnePod {
        pid: Option<i32>,
    }

    impl super::super::NodeView for OnePod {
        fn pods(&self) -> Vec<super::super::ApiPod> {
            Vec::new()
        }
        fn container(&self, _: &str, _: &str, _: &str) -> Option<super::super::ContainerInfo> {
            None
        }
        fn stats_targets(&self) -> Vec<super::super::PodStatsTarget> {
            Vec::new()
        }
        fn sandbox(&self, ns: &str, pod: &str) -> Option<super::super::SandboxInfo> {
            (ns == "default" && pod == "web").then(|| super::super::SandboxInfo {
                uid: "u1".into(),
                pid: self.pid,
            })
        }
    }

    /// The answer to a request with `headers`, as the router would hand it over.
    async fn answer(
        pid: Option<i32>,
        pod: &str,
        uid: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        use axum::extract::FromRequestParts;
        let mut b = http::Request::builder()
            .method("POST")
            .uri(format!("/portForward/default/{pod}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (mut parts, body) = b.body(axum::body::Body::empty()).unwrap().into_parts();
        let ws = axum::extract::ws::WebSocketUpgrade::from_request_parts(&mut parts, &()).await;
        let req = axum::extract::Request::from_parts(parts, body);
        let resp = handle(
            &OnePod { pid },
            "default".into(),
            pod.into(),
            uid.map(str::to_string),
            ws,
            req,
        );
        let code = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_default();
        (code, message)
    }

    #[tokio::test]
    async fn requests_without_a_pod_or_a_protocol_are_refused_by_name() {
        let spdy = [
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "portforward.k8s.io"),
        ];
        assert_eq!(
            answer(Some(7), "nope", None, &spdy).await,
            (404, "pod \"default/nope\" not found on this node".into())
        );
        assert_eq!(
            answer(Some(7), "web", Some("other-uid"), &spdy).await.0,
            404
        );
        assert_eq!(
            answer(None, "web", None, &spdy).await,
            (
                400,
                "pod \"default/web\" has no running sandbox to forward into".into()
            )
        );
        let (code, message) = answer(Some(7), "web", None, &[]).await;
        assert_eq!(code, 400);
        assert!(
            message.contains("SPDY/3.1+portforward.k8s.io")
                && message.contains("Upgrade: SPDY/3.1"),
            "{message}"
        );
        let (code, message) = answer(
            Some(7),
            "web",
            None,
            &[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")],
        )
        .await;
        assert_eq!(code, 400);
        assert!(
            message.contains("unable to negotiate protocol"),
            "{message}"
        );
        // A good SPDY request switches protocols (the upgrade itself needs a real
        // connection: here it fails quietly in its task).
        assert_eq!(answer(Some(7), "web", Some("u1"), &spdy).await.0, 101);
    }

    #[test]
    fn pending_pairs_complete_once() {
        let mut p = Pending::default();
        let err = StreamRequest {
            kind: StreamKind::Error,
            request_id: "0".into(),
            port: Some("80".into()),
        };
        let data = StreamRequest {
            kind: StreamKind::Data,
            ..err.clone()
        };
        assert!(p.add(1, &err));
        assert_eq!(p.complete(), None);
        assert!(!p.add(9, &err), "a second error stream is refused");
        assert!(p.add(3, &data));
        assert_eq!(p.complete(), Some((1, 3)));
        assert_eq!(p.port.as_deref(), Some("80"));
    }
}
