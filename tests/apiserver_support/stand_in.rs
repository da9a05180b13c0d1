//! A stand-in kubelet for the metrics tests (`kubectl top`, the HPA): a small Python HTTPS
//! server that serves a fixture the test writes as `/metrics/resource`, and answers 401
//! unless the apiserver presents its bearer token, as a kubelet behind webhook authn would.
use std::process::{Command, Stdio};

use super::{free_port, skip, ApiServer, Background};

/// Serves `$DIR/resource.txt` at /metrics/resource over HTTPS with the given certificate,
/// only to `Authorization: Bearer <token>`; counts served scrapes in `$DIR/hits`.
const SERVER: &str = r#"
import http.server, ssl, sys, os
d, port, cert, key, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
hits = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global hits
        if self.headers.get("Authorization") != "Bearer " + token:
            self.send_response(401); self.end_headers(); return
        if self.path != "/metrics/resource":
            self.send_response(404); self.end_headers(); return
        body = open(os.path.join(d, "resource.txt"), "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        hits += 1
        open(os.path.join(d, "hits.tmp"), "w").write(str(hits))
        os.replace(os.path.join(d, "hits.tmp"), os.path.join(d, "hits"))
    def log_message(self, *a):
        pass
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
s = http.server.HTTPServer(("127.0.0.1", port), H)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print("ready", flush=True)
s.serve_forever()
"#;

/// Whether python3 with its ssl module is here, as the stand-in needs; if not, the skip is
/// recorded under `test`.
pub fn python_ssl_or_skip(test: &str) -> bool {
    match Command::new("python3").arg("-c").arg("import ssl").status() {
        Ok(s) if s.success() => true,
        _ => {
            skip(
                test,
                "python3 with the ssl module is needed for the stand-in kubelet",
            );
            false
        }
    }
}

/// The running stand-in, killed by PID on drop.
pub struct StandInKubelet {
    /// The loopback port it serves HTTPS on (the Node's kubelet endpoint).
    pub port: u16,
    _process: Background,
}

impl StandInKubelet {
    /// Serve `api`'s test directory (`resource.txt`, scrapes counted in `hits`) with the
    /// apiserver's own certificate, to the apiserver's bearer token only.
    pub fn start(api: &ApiServer) -> StandInKubelet {
        let dir = api.dir.path();
        let data = dir.join("data");
        let token = std::fs::read_to_string(data.join("token")).expect("the apiserver's token");
        let port = free_port();
        let process = Command::new("python3")
            .arg("-c")
            .arg(SERVER)
            .arg(dir)
            .arg(port.to_string())
            .arg(data.join("pki/apiserver.crt"))
            .arg(data.join("pki/apiserver.key"))
            .arg(token.trim())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the stand-in kubelet");
        StandInKubelet {
            port,
            _process: Background(process),
        }
    }

    /// A Ready Node `n1` (2 CPUs, 4Gi) whose kubelet is this stand-in; `labels` is its
    /// `metadata.labels` block (YAML lines indented by four spaces), or "".
    pub fn node(&self, labels: &str) -> String {
        let port = self.port;
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("  labels:\n{labels}")
        };
        format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n{labels}status:\n  \
             addresses:\n  - type: InternalIP\n    address: 127.0.0.1\n  \
             daemonEndpoints:\n    kubeletEndpoint:\n      Port: {port}\n  \
             allocatable:\n    cpu: \"2\"\n    memory: 4Gi\n    pods: \"110\"\n  \
             capacity:\n    cpu: \"2\"\n    memory: 4Gi\n    pods: \"110\"\n  \
             conditions:\n  - type: Ready\n    status: \"True\"\n    reason: KubeletReady\n    message: ok\n"
        )
    }
}
