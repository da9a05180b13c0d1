//! kube-proxy's chain names: a prefix plus the first 16 characters of the standard base32
//! (RFC 4648) encoding of SHA-256 over the service port name, the lowercase protocol and, for
//! endpoint chains, the endpoint (`pkg/proxy/iptables/proxier.go` portProtoHash /
//! servicePortEndpointChainName). Same names as upstream, so `iptables -t nat -L` on a skiff
//! node reads like a kubeadm node's.

use sha2::{Digest, Sha256};

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Standard base32 with padding.
pub fn base32(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    for chunk in data.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let bits = buf.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        // Characters that carry data: ceil(len*8/5); the rest of the 8 are '='.
        let used = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < used {
                let idx = (bits >> (35 - 5 * i)) & 0x1f;
                out.push(ALPHABET[idx as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn hash16(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    base32(&digest)[..16].to_string()
}

/// `KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-` or `KUBE-FW-` chain for a service port.
/// `service_port_name` is `ns/name:port` (or `ns/name` for an unnamed port); `protocol` is
/// lowercase (`tcp`, `udp`, `sctp`).
pub fn service_chain(prefix: &str, service_port_name: &str, protocol: &str) -> String {
    format!(
        "{prefix}{}",
        hash16(&format!("{service_port_name}{protocol}"))
    )
}

/// `KUBE-SEP-` chain for one endpoint (`ip:port`) of a service port.
pub fn endpoint_chain(service_port_name: &str, protocol: &str, endpoint: &str) -> String {
    format!(
        "KUBE-SEP-{}",
        hash16(&format!("{service_port_name}{protocol}{endpoint}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        // RFC 4648 section 10.
        for (input, want) in [
            ("", ""),
            ("f", "MY======"),
            ("fo", "MZXQ===="),
            ("foo", "MZXW6==="),
            ("foob", "MZXW6YQ="),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI======"),
        ] {
            assert_eq!(base32(input.as_bytes()), want, "{input:?}");
        }
    }

    /// Golden vectors from real nodes (k8s-facts 1.3).
    #[test]
    fn chain_names_match_upstream() {
        for (spn, proto, want) in [
            ("default/nginx", "tcp", "2CMXP7HKUVJN7L6M"),
            ("default/kubernetes:https", "tcp", "NPX46M4PTMTKRN6Y"),
            ("kube-system/kube-dns:dns", "udp", "TCOU7JCQXEZGVUNU"),
            ("kube-system/kube-dns:dns-tcp", "tcp", "ERIFXISQEP7F7OF4"),
            ("kube-system/kube-dns:metrics", "tcp", "JD5MR3NA4I4DYORP"),
            ("ns1/svc1:p80", "tcp", "XPGD46QRK7WJZT7O"),
        ] {
            assert_eq!(
                service_chain("KUBE-SVC-", spn, proto),
                format!("KUBE-SVC-{want}"),
                "{spn} {proto}"
            );
        }
        for (spn, proto, ep, want) in [
            ("default/nginx", "tcp", "10.244.2.2:80", "HUXRPHBUO34UVPEF"),
            (
                "kube-system/kube-dns:dns",
                "udp",
                "10.244.0.10:53",
                "R7EMXN5TTQQVP4UW",
            ),
            (
                "default/kubernetes:https",
                "tcp",
                "172.18.0.2:6443",
                "V2PECCYPB6X2GSCW",
            ),
        ] {
            assert_eq!(
                endpoint_chain(spn, proto, ep),
                format!("KUBE-SEP-{want}"),
                "{spn} {proto} {ep}"
            );
        }
        // The same hash under every service-level prefix; at most 28 characters (iptables).
        let ext = service_chain("KUBE-EXT-", "default/nginx", "tcp");
        assert_eq!(ext, "KUBE-EXT-2CMXP7HKUVJN7L6M");
        assert!(service_chain("KUBE-SVL-", "a/b", "udp").len() <= 28);
    }
}
