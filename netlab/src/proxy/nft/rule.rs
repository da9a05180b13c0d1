//! One `-A CHAIN …` line of the syncer's restore input → the nf_tables expressions
//! `iptables-nft` 1.8.9 makes of it, so `iptables -t nat -S` reads the rule back exactly as
//! if `iptables-restore` had written it (kube-proxy users read these chains).
//!
//! iptables-nft's layout (iptables nft-ipv4.c `nft_ipv4_add`, checked against
//! `nft --debug=netlink list table ip nat` of rules it wrote): `-p` as `meta l4proto`, `-s` and
//! `-d` as network-header payload loads (only the prefix's whole bytes, or the full address and a
//! bitwise mask), then each `-m` match in command-line order — `tcp`/`udp` with `--dport` as a
//! transport-header load, everything else as an xtables "compat" match carrying its kernel
//! struct — then a counter, then the target: a verdict, or an xtables target (DNAT rev 2).
//! Only the options the syncer writes in per-service chains are understood; anything else is
//! [`Unsupported`] and the syncer falls back to `iptables-restore`.

use std::net::Ipv4Addr;

use super::msg::NFTA_RULE_EXPRESSIONS;
use super::msg::{Attrs, NFTA_EXPR_DATA, NFTA_EXPR_NAME, NFTA_LIST_ELEM};
use super::msg::{NFTA_RULE_COMPAT, NFTA_RULE_COMPAT_FLAGS, NFTA_RULE_COMPAT_PROTO};

/// A word of a rule line this encoder does not handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode {word:?} in rule {line:?}")]
pub struct Unsupported {
    pub line: String,
    pub word: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub negated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Match {
    Comment(String),
    /// `--probability` as the kernel keeps it: round(2^31 × p) (libxt_statistic).
    Statistic(u32),
    /// `-m tcp` / `-m udp`, with `--dport` or not.
    Ports {
        proto: u8,
        dport: Option<u16>,
    },
    /// `-m recent --name N --set`, or `--rcheck --seconds S --reap`.
    Recent {
        name: String,
        check_seconds: Option<u32>,
    },
    /// `-m addrtype --src-type LOCAL`.
    SrcLocal,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    None,
    Jump(String),
    Verdict(i32),
    Dnat(Ipv4Addr, u16),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub chain: String,
    pub proto: Option<(u8, bool)>,
    pub src: Option<Net>,
    pub dst: Option<Net>,
    pub matches: Vec<Match>,
    pub target: Target,
}

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
// Verdict codes (include/uapi/linux/netfilter.h, nf_tables.h).
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_RETURN: i32 = -5;

/// Split a restore line into words; `"…"` is one word without its quotes (the syncer's
/// comments hold no quotes or backslashes).
fn words(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            out.push(&r[..end]);
            rest = r.get(end + 1..).unwrap_or("").trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            out.push(&rest[..end]);
            rest = rest[end..].trim_start();
        }
    }
    out
}

fn parse_net(s: &str, negated: bool) -> Option<Net> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, p.parse().ok().filter(|p| *p <= 32)?),
        None => (s, 32),
    };
    Some(Net {
        addr: a.parse().ok()?,
        prefix: p,
        negated,
    })
}

fn proto_number(s: &str) -> Option<u8> {
    match s {
        "tcp" => Some(IPPROTO_TCP),
        "udp" => Some(IPPROTO_UDP),
        _ => None,
    }
}

/// Parse one `-A CHAIN …` line.
pub fn parse(line: &str) -> Result<Rule, Unsupported> {
    let w = words(line);
    let bad = |word: &str| Unsupported {
        line: line.trim_end().to_string(),
        word: word.to_string(),
    };
    if w.len() < 2 || w[0] != "-A" {
        return Err(bad(w.first().copied().unwrap_or("")));
    }
    let mut rule = Rule {
        chain: w[1].to_string(),
        proto: None,
        src: None,
        dst: None,
        matches: Vec::new(),
        target: Target::None,
    };
    let mut negate = false;
    let mut i = 2;
    let arg = |i: usize| w.get(i + 1).copied().ok_or_else(|| bad(w[i]));
    while i < w.len() {
        let word = w[i];
        if negate && !matches!(word, "-p" | "-s" | "-d") {
            return Err(bad("!"));
        }
        match word {
            "!" => {
                negate = true;
                i += 1;
                continue;
            }
            "-p" => {
                let p = proto_number(arg(i)?).ok_or_else(|| bad(w[i + 1]))?;
                rule.proto = Some((p, negate));
                i += 2;
            }
            "-s" | "-d" => {
                let net = parse_net(arg(i)?, negate).ok_or_else(|| bad(w[i + 1]))?;
                if word == "-s" {
                    rule.src = Some(net);
                } else {
                    rule.dst = Some(net);
                }
                i += 2;
            }
            "-m" => {
                let m = arg(i)?;
                i += 2;
                match m {
                    "comment" => {
                        if w.get(i) != Some(&"--comment") || i + 1 >= w.len() {
                            return Err(bad(m));
                        }
                        rule.matches.push(Match::Comment(w[i + 1].to_string()));
                        i += 2;
                    }
                    "statistic" => {
                        let p = match w.get(i..i + 4) {
                            Some(["--mode", "random", "--probability", p]) => p
                                .parse::<f64>()
                                .ok()
                                .filter(|p| (0.0..=1.0).contains(p))
                                .ok_or_else(|| bad(p))?,
                            _ => return Err(bad(m)),
                        };
                        rule.matches
                            .push(Match::Statistic((2_147_483_648.0 * p).round() as u32));
                        i += 4;
                    }
                    "tcp" | "udp" => {
                        let proto = proto_number(m).ok_or_else(|| bad(m))?;
                        rule.matches.push(Match::Ports { proto, dport: None });
                    }
                    "recent" => {
                        let name = match w.get(i..i + 2) {
                            Some(["--name", n]) => n.to_string(),
                            _ => return Err(bad(m)),
                        };
                        i += 2;
                        let check_seconds = match w.get(i) {
                            Some(&"--set") => {
                                i += 1;
                                None
                            }
                            Some(&"--rcheck") => match w.get(i + 1..i + 4) {
                                Some(["--seconds", s, "--reap"]) => {
                                    i += 4;
                                    Some(s.parse().map_err(|_| bad(s))?)
                                }
                                _ => return Err(bad("--rcheck")),
                            },
                            _ => return Err(bad(m)),
                        };
                        rule.matches.push(Match::Recent {
                            name,
                            check_seconds,
                        });
                    }
                    "addrtype" => {
                        if w.get(i..i + 2) != Some(&["--src-type", "LOCAL"][..]) {
                            return Err(bad(m));
                        }
                        rule.matches.push(Match::SrcLocal);
                        i += 2;
                    }
                    other => return Err(bad(other)),
                }
                continue;
            }
            "--dport" => {
                // Belongs to the tcp/udp match named earlier (iptables parses module options
                // wherever they stand after the module).
                let port: u16 = arg(i)?.parse().map_err(|_| bad(w[i + 1]))?;
                let m = rule
                    .matches
                    .iter_mut()
                    .rev()
                    .find_map(|m| match m {
                        Match::Ports { dport, .. } if dport.is_none() => Some(dport),
                        _ => None,
                    })
                    .ok_or_else(|| bad(word))?;
                *m = Some(port);
                i += 2;
            }
            "-j" => {
                let t = arg(i)?;
                i += 2;
                rule.target = match t {
                    "ACCEPT" => Target::Verdict(NF_ACCEPT),
                    "DROP" => Target::Verdict(NF_DROP),
                    "RETURN" => Target::Verdict(NFT_RETURN),
                    "DNAT" => {
                        let dest = match w.get(i..i + 2) {
                            Some(["--to-destination", d]) => d,
                            _ => return Err(bad(t)),
                        };
                        i += 2;
                        let (ip, port) = dest.split_once(':').ok_or_else(|| bad(dest))?;
                        Target::Dnat(
                            ip.parse().map_err(|_| bad(dest))?,
                            port.parse().map_err(|_| bad(dest))?,
                        )
                    }
                    c if c.starts_with("KUBE-") => Target::Jump(c.to_string()),
                    other => return Err(bad(other)),
                };
            }
            other => return Err(bad(other)),
        }
        // `!` applies to the one -p/-s/-d it precedes.
        negate = false;
    }
    if negate {
        return Err(bad("!"));
    }
    Ok(rule)
}

fn expr(a: &mut Attrs, name: &str, data: impl FnOnce(&mut Attrs)) {
    let e = a.begin(NFTA_LIST_ELEM);
    a.put_str(NFTA_EXPR_NAME, name);
    let d = a.begin(NFTA_EXPR_DATA);
    data(a);
    a.end(d);
    a.end(e);
}

// Register numbers: iptables-nft loads into NFT_REG_1 and sets verdicts in NFT_REG_VERDICT.
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;

fn data_value(a: &mut Attrs, ty: u16, bytes: &[u8]) {
    let n = a.begin(ty);
    a.put(NFTA_DATA_VALUE, bytes);
    a.end(n);
}

fn meta_l4proto(a: &mut Attrs) {
    // NFTA_META_DREG 1, NFTA_META_KEY 2; NFT_META_L4PROTO 16.
    expr(a, "meta", |a| {
        a.put_be32(1, NFT_REG_1);
        a.put_be32(2, 16);
    });
}

fn payload(a: &mut Attrs, base: u32, offset: u32, len: u32) {
    // NFTA_PAYLOAD_DREG 1, _BASE 2, _OFFSET 3, _LEN 4.
    expr(a, "payload", |a| {
        a.put_be32(1, NFT_REG_1);
        a.put_be32(2, base);
        a.put_be32(3, offset);
        a.put_be32(4, len);
    });
}

fn cmp(a: &mut Attrs, negated: bool, bytes: &[u8]) {
    // NFTA_CMP_SREG 1, _OP 2 (NFT_CMP_EQ 0, NFT_CMP_NEQ 1), _DATA 3.
    expr(a, "cmp", |a| {
        a.put_be32(1, NFT_REG_1);
        a.put_be32(2, u32::from(negated));
        data_value(a, 3, bytes);
    });
}

const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;

/// iptables' add_addr: a whole-byte prefix loads only its bytes; any other mask loads the
/// address and ANDs it with the mask.
fn addr(a: &mut Attrs, offset: u32, net: &Net) {
    let mask = if net.prefix == 0 {
        0u32
    } else {
        u32::MAX << (32 - u32::from(net.prefix))
    };
    let mask = mask.to_be_bytes();
    let value = (u32::from(net.addr) & u32::from_be_bytes(mask)).to_be_bytes();
    if net.prefix.is_multiple_of(8) {
        let len = usize::from(net.prefix / 8);
        payload(a, NFT_PAYLOAD_NETWORK_HEADER, offset, len as u32);
        cmp(a, net.negated, &value[..len]);
    } else {
        payload(a, NFT_PAYLOAD_NETWORK_HEADER, offset, 4);
        // NFTA_BITWISE_SREG 1, _DREG 2, _LEN 3, _MASK 4, _XOR 5.
        expr(a, "bitwise", |a| {
            a.put_be32(1, NFT_REG_1);
            a.put_be32(2, NFT_REG_1);
            a.put_be32(3, 4);
            data_value(a, 4, &mask);
            data_value(a, 5, &[0; 4]);
        });
        cmp(a, net.negated, &value);
    }
}

fn compat(a: &mut Attrs, kind: &str, name: &str, rev: u32, info: &[u8]) {
    // NFTA_MATCH_NAME/_REV/_INFO and NFTA_TARGET_NAME/_REV/_INFO are both 1/2/3. The info is
    // the xtables struct, padded to XT_ALIGN (8 bytes on 64-bit) as iptables sends it.
    let mut padded = info.to_vec();
    padded.resize(info.len().div_ceil(8) * 8, 0);
    expr(a, kind, |a| {
        a.put_str(1, name);
        a.put_be32(2, rev);
        a.put(3, &padded);
    });
}

/// struct xt_comment_info { char comment[256]; }
fn comment_info(text: &str) -> Vec<u8> {
    let mut b = vec![0u8; 256];
    let t = text.as_bytes();
    let n = t.len().min(255);
    b[..n].copy_from_slice(&t[..n]);
    b
}

/// struct xt_statistic_info: u16 mode (0 random), u16 flags, union { u32 probability; … } u
/// (12 bytes), then the kernel's `master` pointer at offset 16 (8-aligned): 24 bytes.
fn statistic_info(probability: u32) -> Vec<u8> {
    let mut b = vec![0u8; 24];
    b[4..8].copy_from_slice(&probability.to_ne_bytes());
    b
}

/// struct xt_tcp (12 bytes) / xt_udp (10): host-order u16 spts[2], dpts[2], then flags, all
/// ports allowed.
fn ports_info(proto: u8) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [0u16, 0xffff, 0, 0xffff] {
        b.extend_from_slice(&v.to_ne_bytes());
    }
    b.resize(if proto == IPPROTO_TCP { 12 } else { 10 }, 0);
    b
}

/// struct xt_recent_mtinfo_v1: u32 seconds, u32 hit_count, u8 check_set, u8 invert,
/// char name[200], u8 side (0: source), then union nf_inet_addr mask at 212 (libxt_recent
/// sets it all-ones): 228 bytes.
fn recent_info(name: &str, check_seconds: Option<u32>) -> Vec<u8> {
    const CHECK: u8 = 1 << 0;
    const SET: u8 = 1 << 1;
    const REAP: u8 = 1 << 5;
    let mut b = vec![0u8; 228];
    let (seconds, flags) = match check_seconds {
        Some(s) => (s, CHECK | REAP),
        None => (0, SET),
    };
    b[0..4].copy_from_slice(&seconds.to_ne_bytes());
    b[8] = flags;
    let n = name.len().min(199);
    b[10..10 + n].copy_from_slice(&name.as_bytes()[..n]);
    b[212..228].fill(0xff);
    b
}

/// struct xt_addrtype_info_v1 { u16 source; u16 dest; u32 flags; }, XT_ADDRTYPE_LOCAL = 1 << 2.
fn src_local_info() -> Vec<u8> {
    let mut b = vec![0u8; 8];
    b[0..2].copy_from_slice(&4u16.to_ne_bytes());
    b
}

/// struct nf_nat_range2: u32 flags (MAP_IPS | PROTO_SPECIFIED), nf_inet_addr min, max,
/// be16 min_proto, max_proto, base_proto: 44 bytes.
fn dnat_info(ip: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut b = vec![0u8; 44];
    b[0..4].copy_from_slice(&3u32.to_ne_bytes());
    b[4..8].copy_from_slice(&ip.octets());
    b[20..24].copy_from_slice(&ip.octets());
    b[36..38].copy_from_slice(&port.to_be_bytes());
    b[38..40].copy_from_slice(&port.to_be_bytes());
    b
}

/// Write the rule's NFTA_RULE_EXPRESSIONS and NFTA_RULE_COMPAT.
pub fn encode(rule: &Rule, a: &mut Attrs) {
    let list = a.begin(NFTA_RULE_EXPRESSIONS);
    if let Some((p, negated)) = rule.proto {
        meta_l4proto(a);
        cmp(a, negated, &[p]);
    }
    if let Some(net) = &rule.src {
        addr(a, 12, net);
    }
    if let Some(net) = &rule.dst {
        addr(a, 16, net);
    }
    for m in &rule.matches {
        match m {
            Match::Comment(c) => compat(a, "match", "comment", 0, &comment_info(c)),
            Match::Statistic(p) => compat(a, "match", "statistic", 0, &statistic_info(*p)),
            Match::Ports {
                dport: Some(port), ..
            } => {
                payload(a, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
                cmp(a, false, &port.to_be_bytes());
            }
            Match::Ports { proto, dport: None } => {
                let name = if *proto == IPPROTO_TCP { "tcp" } else { "udp" };
                compat(a, "match", name, 0, &ports_info(*proto));
            }
            Match::Recent {
                name,
                check_seconds,
            } => compat(a, "match", "recent", 1, &recent_info(name, *check_seconds)),
            Match::SrcLocal => compat(a, "match", "addrtype", 1, &src_local_info()),
        }
    }
    // NFTA_COUNTER_BYTES 1, _PACKETS 2: iptables-nft counts every rule.
    expr(a, "counter", |a| {
        a.put_be64(1, 0);
        a.put_be64(2, 0);
    });
    match &rule.target {
        Target::None => {}
        Target::Jump(chain) => verdict(a, NFT_JUMP, Some(chain)),
        Target::Verdict(code) => verdict(a, *code, None),
        Target::Dnat(ip, port) => compat(a, "target", "DNAT", 2, &dnat_info(*ip, *port)),
    }
    a.end(list);
    // The protocol xtables matches check against (xt_check_match's `proto`).
    if let Some((p, negated)) = rule.proto {
        let c = a.begin(NFTA_RULE_COMPAT);
        a.put_be32(NFTA_RULE_COMPAT_PROTO, u32::from(p));
        a.put_be32(NFTA_RULE_COMPAT_FLAGS, u32::from(negated));
        a.end(c);
    }
}

fn verdict(a: &mut Attrs, code: i32, chain: Option<&str>) {
    // NFTA_IMMEDIATE_DREG 1, _DATA 2; NFTA_VERDICT_CODE 1, _CHAIN 2.
    expr(a, "immediate", |a| {
        a.put_be32(1, NFT_REG_VERDICT);
        let d = a.begin(2);
        let v = a.begin(NFTA_DATA_VERDICT);
        a.put_be32(1, code as u32);
        if let Some(c) = chain {
            a.put_str(2, c);
        }
        a.end(v);
        a.end(d);
    });
}

/// What the syncer reads of a rule it did not write: the text of its `comment` match and
/// the chain its verdict jumps to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommentJump {
    pub comment: Option<String>,
    pub jump: Option<String>,
}

/// [`CommentJump`] from a dumped rule's attributes.
pub fn comment_and_jump(rule_attrs: &[u8]) -> CommentJump {
    use super::msg::{attr_str, attrs, find};
    let (mut comment, mut jump) = (None, None);
    let Some(list) = find(rule_attrs, NFTA_RULE_EXPRESSIONS) else {
        return CommentJump::default();
    };
    for (_, elem) in attrs(list) {
        let name = find(elem, NFTA_EXPR_NAME).map(attr_str);
        let Some(data) = find(elem, NFTA_EXPR_DATA) else {
            continue;
        };
        match name.as_deref() {
            Some("match") if find(data, 1).map(attr_str).as_deref() == Some("comment") => {
                comment = find(data, 3).map(attr_str);
            }
            Some("immediate") => {
                jump = find(data, 2)
                    .and_then(|d| find(d, NFTA_DATA_VERDICT))
                    .and_then(|v| find(v, 2))
                    .map(attr_str);
            }
            _ => {}
        }
    }
    CommentJump { comment, jump }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_syncers_rule_shapes() {
        let r = parse("-A KUBE-SVC-X -m comment --comment \"ns/a:http cluster IP\" -m tcp -p tcp -d 10.96.0.10 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n").unwrap();
        assert_eq!(r.chain, "KUBE-SVC-X");
        assert_eq!(r.proto, Some((6, false)));
        assert_eq!(r.dst.unwrap().prefix, 32);
        assert_eq!(
            r.src,
            Some(Net {
                addr: Ipv4Addr::new(10, 244, 0, 0),
                prefix: 16,
                negated: true
            })
        );
        assert_eq!(
            r.matches,
            vec![
                Match::Comment("ns/a:http cluster IP".into()),
                Match::Ports {
                    proto: 6,
                    dport: Some(80)
                }
            ]
        );
        assert_eq!(r.target, Target::Jump("KUBE-MARK-MASQ".into()));

        let r = parse(
            "-A KUBE-SVC-X -m statistic --mode random --probability 0.1000000000 -j KUBE-SEP-Y",
        )
        .unwrap();
        assert_eq!(r.matches, vec![Match::Statistic(214_748_365)]);
        let r = parse("-A KUBE-SEP-Y -m recent --name KUBE-SEP-Y --set -m udp -p udp -j DNAT --to-destination 10.244.1.2:53").unwrap();
        assert_eq!(
            r.matches,
            vec![
                Match::Recent {
                    name: "KUBE-SEP-Y".into(),
                    check_seconds: None
                },
                Match::Ports {
                    proto: 17,
                    dport: None
                }
            ]
        );
        assert_eq!(r.target, Target::Dnat(Ipv4Addr::new(10, 244, 1, 2), 53));
        let r = parse("-A KUBE-SVC-X -m recent --name KUBE-SEP-Y --rcheck --seconds 10800 --reap -j KUBE-SEP-Y").unwrap();
        assert_eq!(
            r.matches,
            vec![Match::Recent {
                name: "KUBE-SEP-Y".into(),
                check_seconds: Some(10800)
            }]
        );
        let r = parse("-A KUBE-FW-X -m comment --comment \"other traffic\"").unwrap();
        assert_eq!(r.target, Target::None);
        let r = parse(
            "-A KUBE-EXT-X -m comment --comment c -m addrtype --src-type LOCAL -j KUBE-SVC-X",
        )
        .unwrap();
        assert_eq!(r.matches[1], Match::SrcLocal);
    }

    #[test]
    fn anything_else_is_named_as_unsupported() {
        let e = parse("-A KUBE-SVC-X -m conntrack --ctstate NEW -j KUBE-SEP-Y").unwrap_err();
        assert_eq!(e.word, "conntrack");
        assert_eq!(
            parse("-A KUBE-SEP-Y -p sctp -j DNAT --to-destination 1.2.3.4:5")
                .unwrap_err()
                .word,
            "sctp"
        );
        assert_eq!(
            parse("-A KUBE-X -j MASQUERADE").unwrap_err().word,
            "MASQUERADE"
        );
        assert_eq!(
            parse("-A KUBE-X --dport 80 -j ACCEPT").unwrap_err().word,
            "--dport"
        );
        assert_eq!(
            parse("-A KUBE-X -s 10.0.0.0/33 -j ACCEPT")
                .unwrap_err()
                .word,
            "10.0.0.0/33"
        );
        assert_eq!(parse("-I KUBE-X 1").unwrap_err().word, "-I");
        assert_eq!(parse("-A KUBE-X !").unwrap_err().word, "!");
    }

    #[test]
    fn addresses_load_whole_bytes_or_mask() {
        let mut a = Attrs::default();
        addr(&mut a, 12, &parse_net("10.244.0.0/16", true).unwrap());
        // payload of 2 bytes, then cmp neq 10.244
        let text = format!("{:?}", a.bytes);
        assert!(a.bytes.windows(2).any(|w| w == [10, 244]), "{text}");
        assert!(!a.bytes.windows(7).any(|w| w == *b"bitwise"));
        let mut a = Attrs::default();
        addr(&mut a, 12, &parse_net("10.240.0.0/12", false).unwrap());
        assert!(a.bytes.windows(7).any(|w| w == *b"bitwise"));
        assert!(a.bytes.windows(4).any(|w| w == [255, 240, 0, 0]));
    }

    #[test]
    fn an_encoded_rule_gives_back_its_comment_and_jump() {
        let mut a = Attrs::default();
        let r = parse(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        )
        .unwrap();
        encode(&r, &mut a);
        assert_eq!(
            comment_and_jump(&a.bytes),
            CommentJump {
                comment: Some("kubernetes service portals".into()),
                jump: Some("KUBE-SERVICES".into())
            }
        );
        let mut a = Attrs::default();
        encode(
            &parse("-A X -p tcp -j DNAT --to-destination 1.2.3.4:5").unwrap(),
            &mut a,
        );
        assert_eq!(comment_and_jump(&a.bytes), CommentJump::default());
    }

    #[test]
    fn xtables_structs_have_their_kernel_sizes() {
        assert_eq!(comment_info("x").len(), 256);
        assert_eq!(statistic_info(1).len(), 24);
        assert_eq!(ports_info(6).len(), 12);
        assert_eq!(ports_info(17).len(), 10);
        assert_eq!(recent_info("n", None).len(), 228);
        assert_eq!(dnat_info(Ipv4Addr::LOCALHOST, 80).len(), 44);
        assert_eq!(
            &dnat_info(Ipv4Addr::new(1, 2, 3, 4), 8080)[36..40],
            &[0x1f, 0x90, 0x1f, 0x90]
        );
    }
}
