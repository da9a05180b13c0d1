//! `/attach/{ns}/{pod}/{container}`: the running container's output from now on, over the
//! same WebSocket framing as exec (stream 1 stdout, 2 stderr, 3 the final status).
//!
//! The output comes from the container's CRI log, which the per-container monitor writes
//! from the process's stdout and stderr (each line keeps its stream), followed the way
//! `kubectl logs -f` is. Input is not served: the monitor does not keep the container's
//! stdin open for clients, so an attach asking for stdin is refused with a clear status
//! instead of silently dropping what the user types.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};

use super::exec::{decode, error_status, frame, ExecRequest, ERROR, STDERR, STDOUT};
use super::logs::{self, Stream};

/// Runs an attach until the container instance stops or the client goes.
pub(super) async fn run(
    ws: WebSocket,
    protocol: String,
    req: ExecRequest,
    state: super::ApiState,
    (ns, pod, container): (String, String, String),
) {
    let (mut sink, mut client) = ws.split();
    let status = match follow(
        &protocol,
        &req,
        &state,
        (&ns, &pod, &container),
        &mut sink,
        &mut client,
    )
    .await
    {
        Ok(()) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Err(message) => error_status(&message),
    };
    let _ = sink
        .send(Message::Binary(frame(ERROR, status.to_string().as_bytes())))
        .await;
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        })))
        .await;
    let _ = sink.close().await;
}

type Sink = futures::stream::SplitSink<WebSocket, Message>;
type Client = futures::stream::SplitStream<WebSocket>;

async fn follow(
    protocol: &str,
    req: &ExecRequest,
    state: &super::ApiState,
    (ns, pod, container): (&str, &str, &str),
    sink: &mut Sink,
    client: &mut Client,
) -> Result<(), String> {
    if req.stdin {
        return Err(format!(
            "attach to {ns}/{pod}/{container} with stdin is not supported by this kubelet \
             (output only: use kubectl attach without -i)"
        ));
    }
    let Some(info) = state.view.container(ns, pod, container) else {
        return Err(format!(
            "container {container:?} in pod \"{ns}/{pod}\" not found"
        ));
    };
    if !info.running {
        return Err(format!(
            "container {container:?} in pod \"{ns}/{pod}\" is not running"
        ));
    }
    let path = info.current_log();
    // Start at the end: attach shows what the container writes from now on.
    let (_, mut follower) = {
        let p = path.clone();
        tokio::task::spawn_blocking(move || logs::read_all(&p))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| crate::chain(&e))?
    };
    let mut tick = tokio::time::interval(logs::FOLLOW_POLL);
    let mut polls: u32 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            msg = client.next() => match msg {
                // Resize and close signals need nothing from an output-only attach.
                Some(Ok(Message::Binary(data))) => {
                    if let Err(e) = decode(protocol, &data) {
                        tracing::debug!(error = %e, "attach: bad client message");
                    }
                    continue;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                Some(Ok(_)) => continue,
            }
        }
        polls += 1;
        let entries = follower.poll().map_err(|e| crate::chain(&e))?;
        for e in entries {
            let Some(id) = channel_for(e.stream, req) else {
                continue;
            };
            if sink
                .send(Message::Binary(frame(id, &e.content)))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        // Upstream's attach ends when the container exits; check every second.
        if polls.is_multiple_of(5) {
            let still = state
                .view
                .container(ns, pod, container)
                .is_some_and(|c| c.running && c.container_id == info.container_id);
            if !still {
                // One last read for the final lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                for e in follower.poll().map_err(|e| crate::chain(&e))? {
                    if let Some(id) = channel_for(e.stream, req) {
                        let _ = sink.send(Message::Binary(frame(id, &e.content))).await;
                    }
                }
                return Ok(());
            }
        }
    }
}

/// The stream a log line goes out on: with a tty everything is stdout (one terminal);
/// `None` when the client did not ask for that stream.
fn channel_for(stream: Stream, req: &ExecRequest) -> Option<u8> {
    match stream {
        Stream::Stderr if !req.tty => req.stderr.then_some(STDERR),
        _ => req.stdout.then_some(STDOUT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_map_to_channels() {
        let mut req = ExecRequest {
            command: vec![],
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        assert_eq!(channel_for(Stream::Stdout, &req), Some(STDOUT));
        assert_eq!(channel_for(Stream::Stderr, &req), Some(STDERR));
        req.stderr = false;
        assert_eq!(channel_for(Stream::Stderr, &req), None);
        req.tty = true;
        assert_eq!(channel_for(Stream::Stderr, &req), Some(STDOUT));
    }
}
