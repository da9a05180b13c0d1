//! `GET /containerLogs/{ns}/{pod}/{container}`: reading the CRI-format log files the pod
//! monitor writes (`<RFC3339Nano> <stdout|stderr> <F|P> <content>`; a `P` chunk continues
//! on the next line of the same stream, up to an `F` chunk), as upstream's
//! pkg/kubelet/kuberuntime/logs does. Docker JSON lines (`{"log","stream","time"}`) are read
//! too, as upstream still accepts them.
//!
//! Parsing, joining, `sinceTime`/`sinceSeconds`, `tailLines`, `timestamps` and `limitBytes`
//! are pure ([`parse_line`], [`Joiner`], [`LogOptions::select`]); [`follow`] adds the file I/O:
//! it reads what is written after the first dump, checks every [`FOLLOW_POLL`] whether the
//! file was rotated (a new inode at the path: the old one is read to its end first), and
//! ends once the container no longer runs (upstream's fsnotify plus 1 s recheck does the
//! same).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;

/// How often a follower looks for new bytes and rotation.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Problems with a log request or a log file.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid {param} {value:?}: {reason}")]
    BadOption {
        param: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("cannot read log file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine<'a> {
    pub time: Timestamp,
    pub stream: Stream,
    /// `P`: the content goes on in the next line of this stream.
    pub partial: bool,
    pub content: std::borrow::Cow<'a, [u8]>,
}

/// Parses one line (without its `\n`). `None` for a line that is neither CRI nor Docker JSON:
/// upstream skips such lines too (it logs them), so one corrupt line does not hide the rest.
pub fn parse_line(line: &[u8]) -> Option<RawLine<'_>> {
    if line.first() == Some(&b'{') {
        return parse_docker_json(line);
    }
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    // The tag may carry more tags after ':' (CRI: `F:x`); only the first matters.
    let tag = parts.next()?;
    let partial = match tag.split(|&b| b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let content = parts.next().unwrap_or(b"");
    Some(RawLine {
        time,
        stream,
        partial,
        content: content.into(),
    })
}

fn parse_docker_json(line: &[u8]) -> Option<RawLine<'_>> {
    #[derive(serde::Deserialize)]
    struct Docker {
        log: String,
        stream: String,
        time: String,
    }
    let d: Docker = serde_json::from_slice(line).ok()?;
    let stream = match d.stream.as_str() {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let time = d.time.parse().ok()?;
    let (content, partial) = match d.log.strip_suffix('\n') {
        Some(c) => (c.to_string(), false),
        None => (d.log, true),
    };
    Some(RawLine {
        time,
        stream,
        partial,
        content: content.into_bytes().into(),
    })
}

/// One logical line: the chunks joined, with the first chunk's time (upstream prints the
/// timestamp once per joined line, from its first chunk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub time: Timestamp,
    pub stream: Stream,
    /// Ends in `\n`.
    pub content: Vec<u8>,
}

/// Joins `P` chunks per stream (stdout and stderr chunks may interleave).
#[derive(Debug, Default)]
pub struct Joiner {
    stdout: Option<(Timestamp, Vec<u8>)>,
    stderr: Option<(Timestamp, Vec<u8>)>,
}

impl Joiner {
    /// Feeds one raw line; returns the logical line it completes, if any.
    pub fn push(&mut self, line: RawLine<'_>) -> Option<Entry> {
        let slot = match line.stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let (time, mut content) = slot.take().unwrap_or((line.time, Vec::new()));
        content.extend_from_slice(&line.content);
        if line.partial {
            *slot = Some((time, content));
            return None;
        }
        content.push(b'\n');
        Some(Entry {
            time,
            stream: line.stream,
            content,
        })
    }
}

/// Splits complete lines off `buf` (keeping an unfinished tail in it) and parses them.
pub fn drain_lines(buf: &mut Vec<u8>, joiner: &mut Joiner, out: &mut Vec<Entry>) {
    let mut start = 0;
    while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + nl];
        if let Some(raw) = parse_line(line) {
            if let Some(e) = joiner.push(raw) {
                out.push(e);
            }
        }
        start += nl + 1;
    }
    buf.drain(..start);
}

/// The PodLogOptions the kubelet reads from the query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    /// Only the last N lines; `None` = all.
    pub tail_lines: Option<u64>,
    /// Only lines at or after this time.
    pub since: Option<Timestamp>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

fn parse_bool(param: &'static str, v: &str) -> Result<bool, LogError> {
    match v {
        "" | "true" | "1" | "True" | "TRUE" | "t" | "T" => Ok(true),
        "false" | "0" | "False" | "FALSE" | "f" | "F" => Ok(false),
        _ => Err(LogError::BadOption {
            param,
            value: v.into(),
            reason: "not a boolean",
        }),
    }
}

impl LogOptions {
    /// From the query pairs, as the apiserver forwards them. `now` resolves `sinceSeconds`.
    pub fn from_query(pairs: &[(String, String)], now: Timestamp) -> Result<LogOptions, LogError> {
        let mut o = LogOptions::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for (k, v) in pairs {
            match k.as_str() {
                "follow" => o.follow = parse_bool("follow", v)?,
                "previous" => o.previous = parse_bool("previous", v)?,
                "timestamps" => o.timestamps = parse_bool("timestamps", v)?,
                // `tail` is the legacy spelling, where `all` means no limit.
                "tailLines" | "tail" => {
                    if k == "tail" && v == "all" {
                        o.tail_lines = None;
                        continue;
                    }
                    let n: i64 = v.parse().map_err(|_| LogError::BadOption {
                        param: "tailLines",
                        value: v.clone(),
                        reason: "not an integer",
                    })?;
                    // Upstream treats a negative tail as "all" (-1 is the default).
                    o.tail_lines = u64::try_from(n).ok();
                }
                "limitBytes" => {
                    let n: i64 = v.parse().map_err(|_| LogError::BadOption {
                        param: "limitBytes",
                        value: v.clone(),
                        reason: "not an integer",
                    })?;
                    if n < 1 {
                        return Err(LogError::BadOption {
                            param: "limitBytes",
                            value: v.clone(),
                            reason: "must be greater than 0",
                        });
                    }
                    o.limit_bytes = Some(n as u64);
                }
                "sinceSeconds" => {
                    let n: i64 = v.parse().map_err(|_| LogError::BadOption {
                        param: "sinceSeconds",
                        value: v.clone(),
                        reason: "not an integer",
                    })?;
                    if n < 1 {
                        return Err(LogError::BadOption {
                            param: "sinceSeconds",
                            value: v.clone(),
                            reason: "must be greater than 0",
                        });
                    }
                    since_seconds = Some(n);
                }
                "sinceTime" => {
                    let t: Timestamp = v.parse().map_err(|_| LogError::BadOption {
                        param: "sinceTime",
                        value: v.clone(),
                        reason: "not an RFC 3339 time",
                    })?;
                    since_time = Some(t);
                }
                _ => {}
            }
        }
        if since_seconds.is_some() && since_time.is_some() {
            return Err(LogError::BadOption {
                param: "sinceSeconds",
                value: since_seconds.unwrap_or_default().to_string(),
                reason: "at most one of sinceTime or sinceSeconds may be specified",
            });
        }
        o.since = match (since_seconds, since_time) {
            (Some(s), _) => Some(
                now.checked_sub(jiff::SignedDuration::from_secs(s))
                    .unwrap_or(Timestamp::MIN),
            ),
            (_, t) => t,
        };
        Ok(o)
    }

    /// Whether an entry passes `since`.
    pub fn wanted(&self, e: &Entry) -> bool {
        self.since.is_none_or(|s| e.time >= s)
    }

    /// The entries of a whole file to print: `since` first, then the last `tail_lines`.
    pub fn select<'e>(&self, entries: &'e [Entry]) -> &'e [Entry] {
        let first = entries.partition_point(|e| !self.wanted(e));
        // Entries are in time order; a clock step back could break that, so check the rest.
        let kept = if entries[first..].iter().all(|e| self.wanted(e)) {
            &entries[first..]
        } else {
            entries
        };
        match self.tail_lines {
            Some(n) => &kept[kept.len().saturating_sub(n as usize)..],
            None => kept,
        }
    }
}

/// Renders entries, with timestamps when asked.
pub fn render(e: &Entry, timestamps: bool, out: &mut Vec<u8>) {
    if timestamps {
        out.extend_from_slice(format_time(e.time).as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(&e.content);
}

/// RFC 3339 with exactly nine fractional digits, as `kubectl logs --timestamps` shows.
pub fn format_time(t: Timestamp) -> String {
    format!(
        "{}.{:09}Z",
        t.strftime("%Y-%m-%dT%H:%M:%S"),
        t.subsec_nanosecond()
    )
}

/// One CRI log line for `content` (no newline inside) written at `time`: what a log writer
/// appends, and what [`parse_line`] reads back.
pub fn cri_line(time: Timestamp, stream: Stream, partial: bool, content: &[u8]) -> Vec<u8> {
    let mut out = format_time(time).into_bytes();
    out.extend_from_slice(match stream {
        Stream::Stdout => b" stdout ",
        Stream::Stderr => b" stderr ",
    });
    out.extend_from_slice(if partial { b"P " } else { b"F " });
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

/// [`cri_line`] with the current time, for writers that have no `jiff` of their own.
pub fn cri_line_now(stream: Stream, content: &[u8]) -> Vec<u8> {
    cri_line(Timestamp::now(), stream, false, content)
}

/// Counts the bytes a response may still carry under `limitBytes`.
#[derive(Debug, Clone, Copy)]
pub struct Limit(pub Option<u64>);

impl Limit {
    /// Cuts `chunk` to what is left; returns false once nothing more may be sent.
    pub fn take(&mut self, chunk: &mut Vec<u8>) -> bool {
        let Some(left) = self.0.as_mut() else {
            return true;
        };
        if chunk.len() as u64 >= *left {
            chunk.truncate(*left as usize);
            *left = 0;
            return false;
        }
        *left -= chunk.len() as u64;
        true
    }
}

/// Reads `path` from its start: the parsed entries, and a [`Follower`] that continues from
/// where this read ended. A missing file reads as empty (a container that
/// has not written yet).
pub fn read_all(path: &Path) -> Result<(Vec<Entry>, Follower), LogError> {
    let mut follower = Follower {
        path: path.to_path_buf(),
        file: None,
        joiner: Joiner::default(),
        pending: Vec::new(),
    };
    let entries = follower.poll()?;
    Ok((entries, follower))
}

/// A follower's position in a log that may be rotated under it.
pub struct Follower {
    path: PathBuf,
    file: Option<(File, u64)>,
    joiner: Joiner,
    pending: Vec<u8>,
}

impl Follower {
    /// Reads what was appended since the last call, following a rotation (the old file is
    /// read to its end, then the new one from its start) and a truncation (from the start).
    pub fn poll(&mut self) -> Result<Vec<Entry>, LogError> {
        let mut out = Vec::new();
        let read_err = |source| LogError::Read {
            path: self.path.clone(),
            source,
        };
        if let Some((file, offset)) = self.file.as_mut() {
            let n = file.read_to_end(&mut self.pending).map_err(read_err)?;
            *offset += n as u64;
            drain_lines(&mut self.pending, &mut self.joiner, &mut out);
            let (ino, len) = match file.metadata() {
                Ok(m) => (m.ino(), m.len()),
                Err(source) => return Err(read_err(source)),
            };
            if len < *offset {
                // Truncated in place (copytruncate): start over.
                file.seek(SeekFrom::Start(0)).map_err(read_err)?;
                *offset = 0;
                self.pending.clear();
            }
            match std::fs::metadata(&self.path) {
                Ok(m) if m.ino() != ino => {
                    // Rotated: read what the writer added to the old file before it
                    // reopened, then open the new one.
                    let n = file.read_to_end(&mut self.pending).map_err(read_err)?;
                    *offset += n as u64;
                    drain_lines(&mut self.pending, &mut self.joiner, &mut out);
                    self.file = None;
                    self.pending.clear();
                }
                _ => {}
            }
        }
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => {
                    self.file = Some((f, 0));
                    let (file, offset) = self.file.as_mut().expect("just set");
                    let n = file.read_to_end(&mut self.pending).map_err(read_err)?;
                    *offset += n as u64;
                    drain_lines(&mut self.pending, &mut self.joiner, &mut out);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(read_err(source)),
            }
        }
        Ok(out)
    }
}

/// The HTTP side of `/containerLogs/{ns}/{pod}/{container}`.
pub(super) async fn handle(
    state: super::ApiState,
    ns: String,
    pod: String,
    container: String,
    query: Vec<(String, String)>,
) -> axum::response::Response {
    use super::failure;
    use axum::response::IntoResponse;
    use http::StatusCode;
    let opts = match LogOptions::from_query(&query, Timestamp::now()) {
        Ok(o) => o,
        // Upstream answers invalid PodLogOptions with 422.
        Err(e) => return failure(StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")),
    };
    let Some(info) = state.view.container(&ns, &pod, &container) else {
        return failure(
            StatusCode::NOT_FOUND,
            format!("container {container:?} in pod \"{ns}/{pod}\" not found\n"),
        );
    };
    let path = if opts.previous {
        match &info.previous_log {
            Some(p) => p.clone(),
            None => {
                // Upstream's wording (kuberuntime GetContainerLogs via the pod status).
                return failure(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "previous terminated container {container:?} in pod {pod:?} not found\n"
                    ),
                );
            }
        }
    } else {
        info.current_log()
    };
    let read = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || read_all(&path)).await
    };
    let (entries, follower) = match read {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let text = crate::chain(&e);
            tracing::warn!(error = %text, "container logs");
            return failure(StatusCode::INTERNAL_SERVER_ERROR, text);
        }
        Err(e) => {
            return failure(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"));
        }
    };
    let mut first = Vec::new();
    for e in opts.select(&entries) {
        render(e, opts.timestamps, &mut first);
    }
    let mut limit = Limit(opts.limit_bytes);
    let more = limit.take(&mut first);
    let headers = [(http::header::CONTENT_TYPE, "text/plain")];
    if !opts.follow || opts.previous || !more {
        return (headers, first).into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let _ = tx.send(first).await;
    tokio::spawn(follow(
        state,
        (ns, pod, container),
        info.container_id,
        follower,
        opts,
        limit,
        tx,
    ));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(bytes::Bytes::from(b)), rx))
    });
    (headers, axum::body::Body::from_stream(body)).into_response()
}

/// Sends what is appended to the log until the client goes, the limit is reached, or the
/// container instance stops (then one last read, so its final lines are not lost).
async fn follow(
    state: super::ApiState,
    (ns, pod, container): (String, String, String),
    container_id: String,
    mut follower: Follower,
    opts: LogOptions,
    mut limit: Limit,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
) {
    let mut tick = tokio::time::interval(FOLLOW_POLL);
    let mut polls: u32 = 0;
    loop {
        tick.tick().await;
        polls += 1;
        // Upstream rechecks the container every second.
        let running = if polls.is_multiple_of(5) {
            state
                .view
                .container(&ns, &pod, &container)
                .is_some_and(|c| c.running && c.container_id == container_id)
        } else {
            true
        };
        let entries = match follower.poll() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %crate::chain(&e), "following container logs");
                return;
            }
        };
        let mut chunk = Vec::new();
        for e in entries.iter().filter(|e| opts.wanted(e)) {
            render(e, opts.timestamps, &mut chunk);
        }
        let more = limit.take(&mut chunk);
        if !chunk.is_empty() && tx.send(chunk).await.is_err() {
            return;
        }
        if !more || !running || tx.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn entries(text: &str) -> Vec<Entry> {
        let mut buf = text.as_bytes().to_vec();
        let mut out = Vec::new();
        drain_lines(&mut buf, &mut Joiner::default(), &mut out);
        out
    }

    #[test]
    fn cri_lines_parse() {
        let l = parse_line(b"2016-10-06T00:17:09.669794202Z stdout F hello world").unwrap();
        assert_eq!(l.time, ts("2016-10-06T00:17:09.669794202Z"));
        assert_eq!(l.stream, Stream::Stdout);
        assert!(!l.partial);
        assert_eq!(&*l.content, b"hello world");
        let l = parse_line(b"2016-10-06T00:17:09Z stderr P:x part").unwrap();
        assert!(l.partial);
        assert_eq!(l.stream, Stream::Stderr);
        // An empty line is `<ts> stdout F ` or even without the trailing space.
        assert_eq!(
            &*parse_line(b"2016-10-06T00:17:09Z stdout F")
                .unwrap()
                .content,
            b""
        );
        assert!(parse_line(b"garbage").is_none());
        assert!(parse_line(b"2016-10-06T00:17:09Z stdin F x").is_none());
        assert!(parse_line(b"2016-10-06T00:17:09Z stdout X x").is_none());
    }

    #[test]
    fn docker_json_lines_parse() {
        let l = parse_line(
            br#"{"log":"hi\n","stream":"stderr","time":"2016-10-06T00:17:09.669794202Z"}"#,
        )
        .unwrap();
        assert_eq!(l.stream, Stream::Stderr);
        assert!(!l.partial);
        assert_eq!(&*l.content, b"hi");
    }

    #[test]
    fn partial_chunks_join_per_stream() {
        let e = entries(
            "2020-01-01T00:00:01Z stdout P abc\n\
             2020-01-01T00:00:02Z stderr F err\n\
             2020-01-01T00:00:03Z stdout P def\n\
             2020-01-01T00:00:04Z stdout F ghi\n\
             2020-01-01T00:00:05Z stdout F unfinished-line-without-newline",
        );
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].content, b"err\n");
        assert_eq!(e[1].content, b"abcdefghi\n");
        // The joined line carries its first chunk's time.
        assert_eq!(e[1].time, ts("2020-01-01T00:00:01Z"));
    }

    #[test]
    fn options_from_query() {
        let now = ts("2020-01-01T00:01:00Z");
        let q = |pairs: &[(&str, &str)]| {
            let v: Vec<(String, String)> = pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            LogOptions::from_query(&v, now)
        };
        let o = q(&[
            ("follow", "true"),
            ("tailLines", "3"),
            ("sinceSeconds", "30"),
            ("timestamps", "true"),
            ("limitBytes", "10"),
        ])
        .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(3));
        assert_eq!(o.since, Some(ts("2020-01-01T00:00:30Z")));
        assert_eq!(o.limit_bytes, Some(10));
        assert_eq!(q(&[("tailLines", "-1")]).unwrap().tail_lines, None);
        assert_eq!(q(&[("tail", "all")]).unwrap().tail_lines, None);
        assert_eq!(
            q(&[("sinceTime", "2020-01-01T00:00:10Z")]).unwrap().since,
            Some(ts("2020-01-01T00:00:10Z"))
        );
        for bad in [
            ("tailLines", "x"),
            ("limitBytes", "0"),
            ("sinceSeconds", "-5"),
            ("sinceTime", "yesterday"),
            ("follow", "maybe"),
        ] {
            let err = q(&[bad]).unwrap_err().to_string();
            assert!(err.contains(bad.1), "{err}");
        }
        assert!(q(&[("sinceSeconds", "5"), ("sinceTime", "2020-01-01T00:00:10Z")]).is_err());
    }

    #[test]
    fn select_since_then_tail() {
        let e = entries(
            "2020-01-01T00:00:01Z stdout F a\n\
             2020-01-01T00:00:02Z stdout F b\n\
             2020-01-01T00:00:03Z stdout F c\n\
             2020-01-01T00:00:04Z stdout F d\n",
        );
        let mut o = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        let names = |s: &[Entry]| s.iter().map(|e| e.content[0]).collect::<Vec<u8>>();
        assert_eq!(names(o.select(&e)), b"cd");
        o.tail_lines = Some(0);
        assert!(o.select(&e).is_empty());
        o.tail_lines = Some(10);
        o.since = Some(ts("2020-01-01T00:00:02Z"));
        assert_eq!(names(o.select(&e)), b"bcd");
        o.tail_lines = None;
        o.since = Some(ts("2020-01-01T00:00:05Z"));
        assert!(o.select(&e).is_empty());
    }

    #[test]
    fn timestamps_have_nine_digits() {
        let e = Entry {
            time: ts("2020-01-01T00:00:01.5Z"),
            stream: Stream::Stdout,
            content: b"x\n".to_vec(),
        };
        let mut out = Vec::new();
        render(&e, true, &mut out);
        assert_eq!(out, b"2020-01-01T00:00:01.500000000Z x\n");
    }

    #[test]
    fn written_lines_read_back() {
        let t = ts("2020-01-01T00:00:01.000000002Z");
        let line = cri_line(t, Stream::Stderr, true, b"half");
        assert_eq!(line, b"2020-01-01T00:00:01.000000002Z stderr P half\n");
        let raw = parse_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(
            (raw.time, raw.stream, raw.partial),
            (t, Stream::Stderr, true)
        );
        assert_eq!(&*raw.content, b"half");
    }

    #[test]
    fn limit_bytes_cuts() {
        let mut l = Limit(Some(5));
        let mut a = b"abc".to_vec();
        assert!(l.take(&mut a));
        let mut b = b"defg".to_vec();
        assert!(!l.take(&mut b));
        assert_eq!(b, b"de");
        let mut u = Limit(None);
        assert!(u.take(&mut b"whatever".to_vec()));
    }

    #[test]
    fn follower_reads_appends_and_follows_rotation() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(
            &path,
            "2020-01-01T00:00:01Z stdout F one\n2020-01-01T00:00:02Z stdout P tw",
        )
        .unwrap();
        let (first, mut f) = read_all(&path).unwrap();
        assert_eq!(first.len(), 1);
        assert!(f.poll().unwrap().is_empty());
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        w.write_all(b"o\n2020-01-01T00:00:03Z stdout F !\n")
            .unwrap();
        let got = f.poll().unwrap();
        assert_eq!(got.len(), 1);
        // The P chunk "two" (finished by the append) joins the F chunk "!".
        assert_eq!(got[0].content, b"two!\n");
        // Rotation: the old file gets a last line, is renamed, and a new file appears.
        w.write_all(b"2020-01-01T00:00:04Z stdout F three\n")
            .unwrap();
        std::fs::rename(&path, dir.path().join("0.log.20200101-000004")).unwrap();
        std::fs::write(&path, "2020-01-01T00:00:05Z stdout F four\n").unwrap();
        let got: Vec<_> = f
            .poll()
            .unwrap()
            .into_iter()
            .chain(f.poll().unwrap())
            .collect();
        let texts: Vec<&[u8]> = got.iter().map(|e| e.content.as_slice()).collect();
        assert_eq!(texts, vec![&b"three\n"[..], &b"four\n"[..]]);
    }

    #[test]
    fn missing_file_reads_empty_then_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let (first, mut f) = read_all(&path).unwrap();
        assert!(first.is_empty());
        std::fs::write(&path, "2020-01-01T00:00:05Z stdout F late\n").unwrap();
        assert_eq!(f.poll().unwrap()[0].content, b"late\n");
    }
}
