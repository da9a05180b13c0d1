//! `kubectl port-forward` end to end (tests/kubelet_support: `skiff apiserver`, `skiff
//! kubelet` and the real kubectl in a test-made network namespace): busybox httpd listens on
//! 127.0.0.1:80 inside a pod, so only a connection made inside the pod's own network
//! namespace reaches it. kubectl forwards a local port through the apiserver's
//! `pods/portforward` to the kubelet's `/portForward`, first as SPDY tunnelled in a
//! WebSocket (kubectl's default), then as plain SPDY (`KUBECTL_PORT_FORWARD_WEBSOCKETS=false`).
//! Connections are made from a thread inside the test namespace (where kubectl listens),
//! one after another and two at once; a port with nothing listening gets the kubelet's
//! error text, named ports resolve or are refused by name.

mod kubelet_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kubelet_support::{eventually, kubectl, tail, Node, IMAGE};

/// A `kubectl port-forward` this test started, killed by PID on drop; its output lines
/// arrive on channels.
struct PortForward {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    err_lines: Vec<String>,
}

impl PortForward {
    fn start(node: &Node, args: &[&str], env: &[(&str, &str)]) -> PortForward {
        let kubectl = kubectl().expect("kubectl (Node::start checked it)");
        let mut cmd = Command::new("nsenter");
        cmd.arg(node.netns())
            .arg(kubectl)
            .arg("--kubeconfig")
            .arg(&node.kubeconfig)
            .arg("--cache-dir")
            .arg(node.dir.path().join("kube-cache"))
            .arg("port-forward")
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // nsenter execs kubectl: the child's pid is kubectl's.
        let mut child = cmd.spawn().expect("spawn kubectl port-forward");
        let lines = |r: Box<dyn Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        PortForward {
            child,
            stdout,
            stderr,
            err_lines: Vec::new(),
        }
    }

    /// Waits for kubectl's "Forwarding from 127.0.0.1:<local> -> <remote>".
    fn wait_ready(&mut self, node: &Node, local: u16) {
        let want = format!("Forwarding from 127.0.0.1:{local} ->");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.stdout.recv_timeout(Duration::from_millis(200)) {
                Ok(line) if line.contains(&want) => return,
                Ok(line) => seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.drain_stderr();
        panic!(
            "kubectl port-forward never said {want:?}\nstdout: {seen:?}\nstderr: {:?}\nkubelet log:\n{}",
            self.err_lines,
            tail(&node.kubelet_log(), 40)
        );
    }

    fn drain_stderr(&mut self) {
        while let Ok(line) = self.stderr.try_recv() {
            self.err_lines.push(line);
        }
    }

    /// Waits until kubectl exits; returns its exit code and stderr.
    fn wait_exit(&mut self, patience: Duration) -> (Option<i32>, String) {
        let status = eventually("kubectl port-forward to exit", patience, || {
            self.child.try_wait().ok().flatten()
        });
        // The reader thread may still be delivering the last lines.
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(line) = self
            .stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.err_lines.push(line);
        }
        (status.code(), self.err_lines.join("\n"))
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test network namespace (held by the harness), for threads that connect inside it.
fn test_netns(node: &Node) -> PathBuf {
    PathBuf::from(node.netns().trim_start_matches("--net="))
}

/// Runs `f` on a thread inside the test namespace: where kubectl listens.
fn in_test_netns<T: Send + 'static>(node: &Node, f: impl FnOnce() -> T + Send + 'static) -> T {
    skiff_netlab::netns::run_in(&test_netns(node), f).expect("enter the test network namespace")
}

/// A connection to kubectl's local port, made inside the test namespace.
fn connect(node: &Node, port: u16) -> TcpStream {
    let s = in_test_netns(node, move || TcpStream::connect(("127.0.0.1", port)))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port} in the test netns: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

fn http_get(mut s: TcpStream, path: &str) -> String {
    write!(s, "GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .unwrap_or_else(|e| panic!("read the answer to GET {path}: {e} (so far {answer:?})"));
    answer
}

fn assert_page(answer: &str, want: &str) {
    assert!(
        answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.contains(want),
        "want a 200 with {want:?}, got {answer:?}"
    );
}

#[test]
#[ignore = "needs root: network namespace, cgroups, overlay mounts, containers"]
fn kubectl_port_forward_reaches_loopback_inside_the_pod() {
    let Some(node) = Node::start("kubectl_port_forward_reaches_loopback_inside_the_pod") else {
        return;
    };
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: {node}
  containers:
  - name: web
    image: {IMAGE}
    command: ["sh", "-c", "mkdir -p /www/cgi-bin && echo hello-from-the-pod > /www/index.html && seq 1 20000 > /www/big.txt && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\nhead -c \"$CONTENT_LENGTH\" | wc -c\\n' > /www/cgi-bin/count && chmod +x /www/cgi-bin/count && exec httpd -f -p 127.0.0.1:80 -h /www"]
    ports:
    - {{name: http, containerPort: 80}}
"#,
        node = node.node_name
    ));
    node.wait_field("web", "{.status.phase}", "Running", Duration::from_secs(90));
    // httpd binds right after the shell starts it; wait until it answers inside the pod.
    eventually("httpd inside the pod", Duration::from_secs(30), || {
        let r = node.kubectl(&["exec", "web", "--", "wget", "-qO-", "http://127.0.0.1:80/"]);
        r.stdout.contains("hello-from-the-pod").then_some(())
    });

    // kubectl's default: SPDY tunnelled in a WebSocket.
    let mut pf = PortForward::start(&node, &["pod/web", "18080:80"], &[]);
    pf.wait_ready(&node, 18080);
    for i in 0..3 {
        let answer = http_get(connect(&node, 18080), "/");
        assert_page(&answer, "hello-from-the-pod");
        eprintln!("sequential connection {i}: ok");
    }
    // A larger answer (~109 kB) crosses many data frames and WebSocket messages.
    let big = http_get(connect(&node, 18080), "/big.txt");
    assert_page(&big, "\n19999\n20000\n");
    let body = big.split("\r\n\r\n").nth(1).unwrap_or("");
    let expected: String = (1..=20000).map(|n| format!("{n}\n")).collect();
    assert_eq!(body.len(), expected.len(), "the whole file came through");
    assert!(body == expected, "the file came through intact");

    // Upload: 4 MB through kubectl to a CGI that counts what it reads.
    let mut up = connect(&node, 18080);
    let body = vec![b'x'; 4 << 20];
    write!(
        up,
        "POST /cgi-bin/count HTTP/1.0\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    up.write_all(&body).unwrap();
    let mut answer = String::new();
    up.read_to_string(&mut answer).unwrap();
    assert_page(&answer, &format!("\n{}\n", 4 << 20));

    // Two at once: both connected before either asks.
    let mut a = connect(&node, 18080);
    let mut b = connect(&node, 18080);
    write!(b, "GET /big.txt HTTP/1.0\r\n\r\n").unwrap();
    write!(a, "GET / HTTP/1.0\r\n\r\n").unwrap();
    let reader_b = std::thread::spawn(move || {
        let mut s = String::new();
        b.read_to_string(&mut s).map(|_| s)
    });
    let mut answer_a = String::new();
    a.read_to_string(&mut answer_a).unwrap();
    let answer_b = reader_b.join().unwrap().unwrap();
    assert_page(&answer_a, "hello-from-the-pod");
    assert_page(&answer_b, "\n20000\n");
    assert!(!answer_a.contains("19999"), "answers kept apart");

    // A port with nothing listening: kubectl prints the kubelet's error text and, as
    // client-go does since 1.29, ends that port-forward ("lost connection to pod").
    let mut dead = PortForward::start(&node, &["pod/web", "18081:81"], &[]);
    dead.wait_ready(&node, 18081);
    let mut s = connect(&node, 18081);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "nothing answers on port 81: {got:?}");
    let (code, stderr) = dead.wait_exit(Duration::from_secs(60));
    assert_ne!(code, Some(0), "kubectl ends the port-forward: {stderr}");
    assert!(
        stderr.contains("error forwarding port 81 to pod default/web")
            && stderr
                .contains("failed to connect to localhost:81 inside the pod's network namespace")
            && stderr.to_lowercase().contains("connection refused"),
        "kubectl shows the kubelet's reason: {stderr}"
    );
    assert!(stderr.contains("lost connection to pod"), "{stderr}");
    // The other forward (its own session) and the kubelet carry on.
    assert_page(&http_get(connect(&node, 18080), "/"), "hello-from-the-pod");
    pf.drain_stderr();
    assert!(
        pf.child.try_wait().unwrap().is_none(),
        "the first port-forward still runs: {:?}",
        pf.err_lines
    );
    drop(pf);

    // The fallback transport: plain SPDY upgrade, and a named port resolved by kubectl
    // from the pod's spec.
    let mut spdy = PortForward::start(
        &node,
        &["pod/web", "18082:http"],
        &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")],
    );
    spdy.wait_ready(&node, 18082);
    for _ in 0..2 {
        assert_page(&http_get(connect(&node, 18082), "/"), "hello-from-the-pod");
    }
    drop(spdy);
    let log = node.kubelet_log();
    assert!(
        log.contains("port-forward session (SPDY in WebSocket)")
            && log.contains("port-forward session (SPDY)"),
        "both transports were used:\n{}",
        tail(&log, 40)
    );

    // Bad port names are refused by name before anything is forwarded.
    let r = node.kubectl(&["port-forward", "pod/web", "18083:nosuch"]);
    assert!(
        !r.ok && r.stderr.contains("does not have a named port 'nosuch'"),
        "{}",
        r.stderr
    );
    let r = node.kubectl(&["port-forward", "pod/web", "18083:70000"]);
    assert!(!r.ok && r.stderr.contains("70000"), "{}", r.stderr);
}
