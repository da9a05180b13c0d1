//! Helpers shared by netlab's privileged tests: namespaces made under a tempdir, code run
//! inside them on dedicated threads, TCP exchanges between them.
#![allow(dead_code)]

#[path = "../../../tests/common/mod.rs"]
pub mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use skiff_netlab::link;
use skiff_netlab::netns::{self, Netns};

pub fn can_run(test: &str) -> bool {
    if !common::is_root() {
        common::skip(test, "not root");
        return false;
    }
    true
}

/// Run `f`'s future on a thread inside `ns` with its own runtime (so PodNetwork's socket is
/// opened in `ns`).
pub fn in_netns<T, F, Fut>(ns: &Path, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    netns::run_in(ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(f())
    })
    .expect("run in netns")
}

/// Listen on `addr` inside `ns`; answer one connection with `pong <peer address>`.
pub fn serve_once(ns: &Path, addr: Ipv4Addr) -> (u16, std::thread::JoinHandle<()>) {
    serve_n(ns, addr, 1)
}

/// Listen on `addr` inside `ns`; answer `n` connections with `pong <peer address>`.
pub fn serve_n(ns: &Path, addr: Ipv4Addr, n: usize) -> (u16, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let ns = ns.to_path_buf();
    let t = std::thread::spawn(move || {
        netns::run_in(&ns, move || {
            let l = TcpListener::bind((addr, 0)).expect("bind");
            tx.send(l.local_addr().unwrap().port()).unwrap();
            for _ in 0..n {
                let (mut s, peer) = l.accept().expect("accept");
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line).unwrap();
                assert_eq!(line, "ping\n");
                writeln!(s, "pong {}", peer.ip()).unwrap();
            }
        })
        .expect("server netns");
    });
    let port = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server ready");
    (port, t)
}

/// Connect from inside `ns` to `addr:port`, send ping, return the answer.
pub fn ping(ns: &Path, addr: Ipv4Addr, port: u16) -> std::io::Result<String> {
    netns::run_in(ns, move || -> std::io::Result<String> {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((addr, port)), Duration::from_secs(5))?;
        s.write_all(b"ping\n")?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line)?;
        Ok(line.trim_end().to_string())
    })
    .expect("client netns")
}

pub fn exchange(server_ns: &Path, server: Ipv4Addr, client_ns: &Path) -> String {
    let (port, t) = serve_once(server_ns, server);
    let answer = ping(client_ns, server, port)
        .unwrap_or_else(|e| panic!("connect {server}:{port} from {}: {e}", client_ns.display()));
    t.join().expect("server thread");
    answer
}

/// The IPv4 addresses on `name` inside `ns` (empty if there is no such link).
pub fn addresses_in(ns: &Path, name: &'static str) -> Vec<(Ipv4Addr, u8)> {
    in_netns(ns, move || async move {
        let h = link::connect().unwrap();
        match link::get(&h, name).await.unwrap() {
            Some(l) => link::ipv4_addresses(&h, &l).await.unwrap(),
            None => Vec::new(),
        }
    })
}

pub fn link_exists(ns: &Path, name: String) -> bool {
    in_netns(ns, move || async move {
        let h = link::connect().unwrap();
        link::get(&h, &name).await.unwrap().is_some()
    })
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub node: Netns,
}

impl Lab {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let node = Netns::create(&dir.path().join("node")).expect("node netns");
        Lab { dir, node }
    }

    pub fn pod_ns(&self, name: &str) -> Netns {
        Netns::create(&self.dir.path().join(name)).expect("pod netns")
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }
}
