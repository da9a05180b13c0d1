//! grpc probes: `grpc.health.v1.Health/Check` over HTTP/2 without TLS (h2c), as upstream's
//! pkg/probe/grpc, or over TLS without verification for 1.37's `mode: TLS`. The protobuf messages are tiny and written by hand:
//! `HealthCheckRequest { string service = 1; }`,
//! `HealthCheckResponse { ServingStatus status = 1; }` (0 UNKNOWN, 1 SERVING, 2 NOT_SERVING,
//! 3 SERVICE_UNKNOWN).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::state::Outcome;

/// The request message, gRPC-framed (1 byte compressed flag, 4 bytes big-endian length).
pub fn encode_request(service: &str) -> Bytes {
    let mut msg = BytesMut::new();
    if !service.is_empty() {
        msg.put_u8(0x0a); // field 1, wire type 2 (length-delimited)
        put_varint(&mut msg, service.len() as u64);
        msg.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + msg.len());
    framed.put_u8(0);
    framed.put_u32(msg.len() as u32);
    framed.put_slice(&msg);
    framed.freeze()
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The serving status in a gRPC-framed HealthCheckResponse (missing field = 0, UNKNOWN).
pub fn decode_response(framed: &[u8]) -> Result<u64, String> {
    if framed.len() < 5 {
        return Err("short grpc message".into());
    }
    if framed[0] != 0 {
        return Err("compressed grpc message".into());
    }
    let len = u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize;
    let mut msg = framed.get(5..5 + len).ok_or("truncated grpc message")?;
    let mut status = 0;
    while !msg.is_empty() {
        let (key, n) = read_varint(msg).ok_or("bad protobuf key")?;
        msg = &msg[n..];
        match key & 7 {
            0 => {
                let (v, n) = read_varint(msg).ok_or("bad protobuf varint")?;
                msg = &msg[n..];
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let (l, n) = read_varint(msg).ok_or("bad protobuf length")?;
                msg = msg
                    .get(n + l as usize..)
                    .ok_or("truncated protobuf field")?;
            }
            1 => msg = msg.get(8..).ok_or("truncated protobuf field")?,
            5 => msg = msg.get(4..).ok_or("truncated protobuf field")?,
            _ => return Err("unknown protobuf wire type".into()),
        }
    }
    Ok(status)
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

fn status_name(s: u64) -> &'static str {
    match s {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNRECOGNIZED",
    }
}

/// Runs a grpc probe against `host:port` within `timeout`; with `tls`, over TLS that accepts
/// any certificate (1.37's `grpc.mode: TLS`), else plaintext h2c.
pub async fn probe(host: &str, port: u16, service: &str, tls: bool, timeout: Duration) -> Outcome {
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let connected = tokio::time::timeout_at(deadline, async {
        let tcp = super::http::dial(host, port).await?;
        let io: Box<dyn Io> = if tls {
            Box::new(super::http::tls_connect(tcp, host, true).await?)
        } else {
            Box::new(tcp)
        };
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok::<_, String>(sender)
    })
    .await;
    let mut sender = match connected {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service {addr:?} within {}s: {e}",
                timeout.as_secs()
            ))
        }
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service {addr:?} within {}s",
                timeout.as_secs()
            ))
        }
    };
    let call = async {
        let req = hyper::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", super::http::USER_AGENT)
            .body(Full::new(encode_request(service)))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let head_status = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let head_message = resp
            .headers()
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let http_status = resp.status().as_u16();
        let collected = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let trailers = collected.trailers().cloned();
        let body = collected.to_bytes();
        let grpc_status = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or(head_status);
        let grpc_message = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or(head_message)
            .unwrap_or_default();
        Ok::<_, String>((http_status, grpc_status, grpc_message, body))
    };
    let (http_status, grpc_status, grpc_message, body) =
        match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Outcome::Failure(format!("error: health rpc failed: {e}")),
            Err(_) => {
                return Outcome::Failure(format!(
                    "timeout: health rpc did not complete within {}s",
                    timeout.as_secs()
                ))
            }
        };
    if http_status != 200 {
        return Outcome::Failure(format!(
            "error: health rpc failed: http status {http_status}"
        ));
    }
    match grpc_status.as_deref() {
        Some("0") => {}
        Some("12") => {
            return Outcome::Failure(format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): rpc error: code = Unimplemented desc = {grpc_message}"
            ))
        }
        Some(code) => {
            return Outcome::Failure(format!(
                "error: health rpc probe failed: rpc error: code = {code} desc = {grpc_message}"
            ))
        }
        None => return Outcome::Failure("error: health rpc failed: no grpc-status".into()),
    }
    match decode_response(&body) {
        Ok(1) => Outcome::Success,
        Ok(s) => Outcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            status_name(s)
        )),
        Err(e) => Outcome::Failure(format!("error: health rpc failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_encoding() {
        assert_eq!(&encode_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &encode_request("db")[..],
            &[0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']
        );
    }

    #[test]
    fn response_decoding() {
        assert_eq!(decode_response(&[0, 0, 0, 0, 2, 0x08, 1]), Ok(1));
        assert_eq!(decode_response(&[0, 0, 0, 0, 2, 0x08, 2]), Ok(2));
        assert_eq!(decode_response(&[0, 0, 0, 0, 0]), Ok(0));
        // An unknown length-delimited field before the status is skipped.
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]),
            Ok(1)
        );
        assert!(decode_response(&[0, 0, 0]).is_err());
        assert!(decode_response(&[0, 0, 0, 0, 9, 0x08]).is_err());
    }
}
