//! kube-proxy's per-service nat chains written straight through nf_tables netlink, as
//! `iptables-nft` would write them (see [`rule`]): `iptables -t nat -S` shows the same rules.
//!
//! Why: on the nft backend `iptables-nft-restore --noflush` costs grow with the table (it reads
//! every chain name and keeps the input's chains in a sorted list walked per rule), so a
//! 10,000-Service full sync needs ~100 restores and 12–14 s. One netlink transaction per sync
//! holds every chain and rule, and the kernel commits it at once. The top-level chains
//! (KUBE-SERVICES, KUBE-NODEPORTS, filter) still go through `iptables-restore`: they are few,
//! and change only when Services come and go.

pub mod msg;
pub mod rule;

use std::collections::BTreeSet;
use std::io;

pub use msg::Batch;
pub use rule::Unsupported;

use crate::sys::nfnetlink::NfnlSocket;
use msg::{Reply, NFTA_CHAIN_NAME, NFTA_CHAIN_TABLE, NLM_F_ACK, NLM_F_DUMP};

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nf_tables netlink socket: {step}")]
    Socket {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("nf_tables refused to {what} ({more} more messages refused)")]
    Refused {
        what: String,
        more: usize,
        #[source]
        source: io::Error,
    },
    #[error("nf_tables sent a malformed reply")]
    Malformed,
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
}

/// The iptables table the per-service chains live in.
pub const NAT: &str = "nat";

/// An nf_tables connection in the calling thread's network namespace.
#[derive(Debug)]
pub struct Nft {
    sock: NfnlSocket,
    seq: u32,
    buf: Vec<u8>,
}

const RECV_BUF: usize = 256 * 1024;

impl Nft {
    pub fn open() -> Result<Nft, NftError> {
        let socket = |step| move |source| NftError::Socket { step, source };
        let sock = NfnlSocket::open().map_err(socket("open"))?;
        sock.reserve_recv(8 << 20)
            .map_err(socket("set the receive buffer"))?;
        Ok(Nft {
            sock,
            seq: 1,
            buf: vec![0; RECV_BUF],
        })
    }

    /// A new transaction; send it with [`Nft::commit`].
    pub fn batch(&mut self) -> Batch {
        Batch::new(self.seq)
    }

    fn next_seq(&mut self) -> u32 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        seq
    }

    /// Send `req`, then hand every reply message to `handle` until it returns the answer.
    fn exchange<T>(
        &mut self,
        req: &[u8],
        mut handle: impl FnMut(Reply<'_>) -> Option<Result<T, NftError>>,
    ) -> Result<T, NftError> {
        let socket = |step| move |source| NftError::Socket { step, source };
        self.sock.send(req).map_err(socket("send a request"))?;
        loop {
            let n = self
                .sock
                .recv(&mut self.buf)
                .map_err(socket("receive an answer"))?;
            for reply in msg::replies(&self.buf[..n]).ok_or(NftError::Malformed)? {
                if let Some(answer) = handle(reply) {
                    return answer;
                }
            }
        }
    }

    /// The chains of the ipv4 table `table` (empty when there is no such table).
    pub fn chains(&mut self, table: &str) -> Result<BTreeSet<String>, NftError> {
        let seq = self.next_seq();
        let req = msg::request(
            msg::NFT_MSG_GETCHAIN,
            NLM_F_DUMP,
            seq,
            &[(NFTA_CHAIN_TABLE, table)],
        );
        let mut names = BTreeSet::new();
        self.exchange(&req, |reply| match reply {
            Reply::Nft { msg, attrs, .. } if msg == msg::NFT_MSG_NEWCHAIN => {
                let text = |ty| msg::find(attrs, ty).map(msg::attr_str);
                if text(NFTA_CHAIN_TABLE).as_deref() == Some(table) {
                    names.extend(text(NFTA_CHAIN_NAME));
                }
                None
            }
            reply => dump_end(reply, || format!("list the chains of table {table}")),
        })?;
        Ok(names)
    }

    /// Whether the ipv4 table `table` has `chain` (one GETCHAIN, no dump: a dump of 100,000
    /// chains takes seconds, the kernel resuming each part from the start of the list).
    pub fn has_chain(&mut self, table: &str, chain: &str) -> Result<bool, NftError> {
        let seq = self.next_seq();
        let req = msg::request(
            msg::NFT_MSG_GETCHAIN,
            0,
            seq,
            &[(NFTA_CHAIN_TABLE, table), (NFTA_CHAIN_NAME, chain)],
        );
        self.exchange(&req, |reply| match reply {
            Reply::Nft { msg, seq: s, .. } if s == seq && msg == msg::NFT_MSG_NEWCHAIN => {
                Some(Ok(true))
            }
            Reply::Error { seq: s, errno } if s == seq && errno == libc::ENOENT => Some(Ok(false)),
            Reply::Error { seq: s, errno } if s == seq => Some(Err(refused(
                format!("get chain {chain} of table {table}"),
                errno,
            ))),
            _ => None,
        })
    }

    /// The rules of `chain` in the ipv4 table `table` as iptables would match them up with a
    /// jump it wants: each rule's `-m comment` text and `-j` chain. A missing table or chain
    /// has no rules. This reads one chain where `iptables -S CHAIN` (1.8.9) fetches the whole
    /// table: seconds at 10,000 Services.
    pub fn chain_jumps(
        &mut self,
        table: &str,
        chain: &str,
    ) -> Result<Vec<rule::CommentJump>, NftError> {
        let seq = self.next_seq();
        let req = msg::request(
            msg::NFT_MSG_GETRULE,
            NLM_F_DUMP,
            seq,
            &[(msg::NFTA_RULE_TABLE, table), (msg::NFTA_RULE_CHAIN, chain)],
        );
        let mut out = Vec::new();
        self.exchange(&req, |reply| match reply {
            Reply::Nft { msg, attrs, .. }
                if msg == msg::NFT_MSG_NEWRULE
                    && msg::find(attrs, msg::NFTA_RULE_CHAIN)
                        .map(msg::attr_str)
                        .as_deref()
                        == Some(chain) =>
            {
                out.push(rule::comment_and_jump(attrs));
                None
            }
            reply => dump_end(reply, || format!("list the rules of chain {chain}")),
        })?;
        Ok(out)
    }

    /// Send `batch` as one transaction and wait for the kernel's verdict: errors come back
    /// only for refused messages (no per-message ACKs: a 300,000-rule batch would overflow
    /// any receive buffer), so a GETGEN with an ACK follows the batch, and its answer, which
    /// the kernel queues after the batch's, marks the end.
    pub fn commit(&mut self, batch: Batch) -> Result<(), NftError> {
        let (bytes, described) = batch.finish();
        let gen_seq = described.next_seq();
        self.seq = gen_seq.wrapping_add(1);
        self.sock
            .reserve_send(bytes.len())
            .map_err(|source| NftError::Socket {
                step: "set the send buffer",
                source,
            })?;
        self.sock.send(&bytes).map_err(|source| NftError::Socket {
            step: "send the batch",
            source,
        })?;
        let end = msg::request(msg::NFT_MSG_GETGEN, NLM_F_ACK, gen_seq, &[]);
        let mut refusals: Vec<(u32, i32)> = Vec::new();
        self.exchange(&end, |reply| match reply {
            Reply::Error { seq, errno } if seq == gen_seq => Some(match refusals.first() {
                Some(&(seq, errno)) => Err(NftError::Refused {
                    what: described.what(seq),
                    more: refusals.len() - 1,
                    source: io::Error::from_raw_os_error(errno),
                }),
                None if errno != 0 => Err(refused("get the ruleset generation".into(), errno)),
                None => Ok(()),
            }),
            Reply::Error { seq, errno } if errno != 0 => {
                refusals.push((seq, errno));
                None
            }
            _ => None,
        })
    }
}

fn refused(what: String, errno: i32) -> NftError {
    NftError::Refused {
        what,
        more: 0,
        source: io::Error::from_raw_os_error(errno),
    }
}

/// The end of a dump: DONE, or ENOENT (no such table or chain: nothing in it), or an error.
fn dump_end(reply: Reply<'_>, what: impl FnOnce() -> String) -> Option<Result<(), NftError>> {
    match reply {
        Reply::Done { .. } => Some(Ok(())),
        Reply::Error { errno, .. } if errno == libc::ENOENT => Some(Ok(())),
        Reply::Error { errno, .. } if errno != 0 => Some(Err(refused(what(), errno))),
        _ => None,
    }
}

/// Append `line` (an `-A CHAIN …` restore line) to `batch`.
pub fn append_line(batch: &mut Batch, line: &str) -> Result<(), Unsupported> {
    let r = rule::parse(line)?;
    batch.append_rule(NAT, &r.chain, line.trim_end(), |a| rule::encode(&r, a));
    Ok(())
}
