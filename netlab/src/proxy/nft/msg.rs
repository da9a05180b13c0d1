//! nf_tables netlink messages, built and parsed as bytes (pure). Numbers are from the kernel's
//! UAPI headers include/uapi/linux/netlink.h, netfilter/nfnetlink.h and netfilter/nf_tables.h;
//! every integer attribute of nf_tables is big-endian.

/// `NFNL_SUBSYS_NFTABLES`: the high byte of an nf_tables message type.
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN` / `_END` (= NLMSG_MIN_TYPE, +1): a batch is one transaction.
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
pub const NFT_MSG_NEWCHAIN: u16 = 3;
pub const NFT_MSG_GETCHAIN: u16 = 4;
pub const NFT_MSG_DELCHAIN: u16 = 5;
pub const NFT_MSG_NEWRULE: u16 = 6;
pub const NFT_MSG_GETRULE: u16 = 7;
pub const NFT_MSG_DELRULE: u16 = 8;
pub const NFT_MSG_GETGEN: u16 = 16;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// `NFPROTO_IPV4`: the family of iptables' `ip` tables.
pub const NFPROTO_IPV4: u8 = 2;

// enum nft_chain_attributes / nft_rule_attributes
pub const NFTA_CHAIN_TABLE: u16 = 1;
pub const NFTA_CHAIN_NAME: u16 = 3;
pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub const NFTA_RULE_COMPAT: u16 = 5;
pub const NFTA_RULE_COMPAT_PROTO: u16 = 1;
pub const NFTA_RULE_COMPAT_FLAGS: u16 = 2;
pub const NFTA_LIST_ELEM: u16 = 1;
pub const NFTA_EXPR_NAME: u16 = 1;
pub const NFTA_EXPR_DATA: u16 = 2;

/// Netlink attributes appended to a byte buffer (struct nlattr: u16 length, u16 type, the
/// payload, padding to 4 bytes).
#[derive(Debug, Default)]
pub struct Attrs {
    pub bytes: Vec<u8>,
}

impl Attrs {
    pub fn put(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.bytes.extend_from_slice(&(len as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&ty.to_ne_bytes());
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    /// A NUL-terminated string (NLA_STRING / NLA_NUL_STRING).
    pub fn put_str(&mut self, ty: u16, s: &str) {
        let len = 4 + s.len() + 1;
        self.bytes.extend_from_slice(&(len as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&ty.to_ne_bytes());
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        self.pad();
    }

    pub fn put_be32(&mut self, ty: u16, v: u32) {
        self.put(ty, &v.to_be_bytes());
    }

    pub fn put_be64(&mut self, ty: u16, v: u64) {
        self.put(ty, &v.to_be_bytes());
    }

    /// Open a nested attribute; close it with [`Attrs::end`].
    pub fn begin(&mut self, ty: u16) -> usize {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(&[0, 0]);
        self.bytes
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }

    pub fn end(&mut self, at: usize) {
        let len = (self.bytes.len() - at) as u16;
        self.bytes[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

/// One nf_tables transaction: BATCH_BEGIN, the messages, BATCH_END, in one buffer that is
/// sent with one `sendmsg` (nfnetlink processes a batch only within one skb). Each message
/// has its own sequence number; `what` says what each one did, for errors.
#[derive(Debug)]
pub struct Batch {
    buf: Attrs,
    first_seq: u32,
    next_seq: u32,
    what: Notes,
    messages: usize,
}

/// What each message does, by position: a verb and a subject (a chain name, a rule line)
/// kept in one growing string, so a 300,000-rule batch makes no allocation per message for
/// descriptions only an error would print.
#[derive(Debug, Default)]
struct Notes {
    text: String,
    spans: Vec<(&'static str, u32, u32)>,
}

impl Notes {
    fn push(&mut self, verb: &'static str, subject: &str) {
        let start = self.text.len() as u32;
        self.text.push_str(subject);
        self.spans.push((verb, start, self.text.len() as u32));
    }

    fn get(&self, i: usize) -> Option<String> {
        let &(verb, start, end) = self.spans.get(i)?;
        let subject = &self.text[start as usize..end as usize];
        Some(if subject.is_empty() {
            verb.to_string()
        } else {
            format!("{verb} {subject}")
        })
    }
}

impl Batch {
    pub fn new(first_seq: u32) -> Batch {
        let mut b = Batch {
            buf: Attrs::default(),
            first_seq,
            next_seq: first_seq,
            what: Notes::default(),
            messages: 0,
        };
        // The batch markers carry the subsystem in nfgenmsg.res_id (big-endian).
        b.header(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            0,
            NFNL_SUBSYS_NFTABLES,
            ("begin", ""),
        );
        b.close(0);
        b
    }

    /// Messages added besides the batch markers.
    pub fn len(&self) -> usize {
        self.messages
    }

    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Bytes so far.
    pub fn size(&self) -> usize {
        self.buf.bytes.len()
    }

    fn header(
        &mut self,
        ty: u16,
        flags: u16,
        family: u8,
        res_id: u16,
        (verb, subject): (&'static str, &str),
    ) -> usize {
        let at = self.buf.bytes.len();
        let b = &mut self.buf.bytes;
        b.extend_from_slice(&0u32.to_ne_bytes()); // length, set by close()
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&self.next_seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        b.push(family);
        b.push(0); // NFNETLINK_V0
        b.extend_from_slice(&res_id.to_be_bytes());
        self.next_seq = self.next_seq.wrapping_add(1);
        self.what.push(verb, subject);
        at
    }

    fn close(&mut self, at: usize) {
        let len = (self.buf.bytes.len() - at) as u32;
        self.buf.bytes[at..at + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn message(
        &mut self,
        msg: u16,
        flags: u16,
        what: (&'static str, &str),
        attrs: impl FnOnce(&mut Attrs),
    ) {
        let ty = (NFNL_SUBSYS_NFTABLES << 8) | msg;
        let at = self.header(ty, NLM_F_REQUEST | flags, NFPROTO_IPV4, 0, what);
        attrs(&mut self.buf);
        self.close(at);
        self.messages += 1;
    }

    /// Create `chain` in `table` unless it exists (no NLM_F_EXCL: an existing chain is kept,
    /// as `:CHAIN - [0:0]` does in an `iptables-restore --noflush`).
    pub fn new_chain(&mut self, table: &str, chain: &str) {
        self.message(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            ("create chain", chain),
            |a| {
                a.put_str(NFTA_CHAIN_TABLE, table);
                a.put_str(NFTA_CHAIN_NAME, chain);
            },
        );
    }

    /// Delete every rule of `chain` (DELRULE without a handle flushes the chain).
    pub fn flush_chain(&mut self, table: &str, chain: &str) {
        self.message(NFT_MSG_DELRULE, 0, ("flush chain", chain), |a| {
            a.put_str(NFTA_RULE_TABLE, table);
            a.put_str(NFTA_RULE_CHAIN, chain);
        });
    }

    /// Delete `chain` (it must be empty and unreferenced by then, in this transaction).
    pub fn del_chain(&mut self, table: &str, chain: &str) {
        self.message(NFT_MSG_DELCHAIN, 0, ("delete chain", chain), |a| {
            a.put_str(NFTA_CHAIN_TABLE, table);
            a.put_str(NFTA_CHAIN_NAME, chain);
        });
    }

    /// Append a rule to `chain`; `body` writes its NFTA_RULE_EXPRESSIONS (and compat), and
    /// `line` says which rule it is in an error.
    pub fn append_rule(
        &mut self,
        table: &str,
        chain: &str,
        line: &str,
        body: impl FnOnce(&mut Attrs),
    ) {
        let flags = NLM_F_CREATE | NLM_F_APPEND;
        self.message(NFT_MSG_NEWRULE, flags, ("add rule", line), |a| {
            a.put_str(NFTA_RULE_TABLE, table);
            a.put_str(NFTA_RULE_CHAIN, chain);
            body(a);
        });
    }

    /// The bytes to send, and what each sequence number did.
    pub fn finish(mut self) -> (Vec<u8>, Described) {
        let at = self.header(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            0,
            NFNL_SUBSYS_NFTABLES,
            ("commit", ""),
        );
        self.close(at);
        (
            self.buf.bytes,
            Described {
                first_seq: self.first_seq,
                what: self.what,
            },
        )
    }
}

/// What each message of a sent batch did, by sequence number.
#[derive(Debug)]
pub struct Described {
    first_seq: u32,
    what: Notes,
}

impl Described {
    pub fn what(&self, seq: u32) -> String {
        self.what
            .get(seq.wrapping_sub(self.first_seq) as usize)
            .unwrap_or_else(|| "an unknown message".into())
    }

    pub fn next_seq(&self) -> u32 {
        self.first_seq.wrapping_add(self.what.spans.len() as u32)
    }
}

/// A request outside a batch: a GETCHAIN/GETRULE dump filtered by string attributes (table,
/// chain), or GETGEN with an ACK (sent after a batch, its answer marks the end of the batch's
/// error replies).
pub fn request(msg: u16, flags: u16, seq: u32, filter: &[(u16, &str)]) -> Vec<u8> {
    let mut b = Batch {
        buf: Attrs::default(),
        first_seq: seq,
        next_seq: seq,
        what: Notes::default(),
        messages: 0,
    };
    let ty = (NFNL_SUBSYS_NFTABLES << 8) | msg;
    let family = if filter.is_empty() { 0 } else { NFPROTO_IPV4 };
    let at = b.header(ty, NLM_F_REQUEST | flags, family, 0, ("request", ""));
    for (attr, value) in filter {
        b.buf.put_str(*attr, value);
    }
    b.close(at);
    b.buf.bytes
}

/// One message of a reply datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// NLMSG_ERROR: errno (0 for an ACK) and the sequence number it answers.
    Error {
        seq: u32,
        errno: i32,
    },
    Done {
        seq: u32,
    },
    /// An nf_tables message: its NFT_MSG_* type, sequence number and attributes.
    Nft {
        msg: u16,
        seq: u32,
        attrs: &'a [u8],
    },
    Other {
        ty: u16,
        seq: u32,
    },
}

/// Split a datagram into messages; `None` if it is malformed.
pub fn replies(buf: &[u8]) -> Option<Vec<Reply<'_>>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(rest[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return None;
        }
        let ty = u16::from_ne_bytes(rest[4..6].try_into().ok()?);
        let seq = u32::from_ne_bytes(rest[8..12].try_into().ok()?);
        let body = &rest[NLMSG_HDRLEN..len];
        out.push(match ty {
            NLMSG_ERROR => {
                let errno = i32::from_ne_bytes(body.get(0..4)?.try_into().ok()?);
                Reply::Error { seq, errno: -errno }
            }
            NLMSG_DONE => Reply::Done { seq },
            t if t >> 8 == NFNL_SUBSYS_NFTABLES => Reply::Nft {
                msg: t & 0xff,
                seq,
                attrs: body.get(NFGENMSG_LEN..)?,
            },
            t => Reply::Other { ty: t, seq },
        });
        let step = (len + 3) & !3;
        rest = rest.get(step..).unwrap_or(&[]);
    }
    Some(out)
}

/// The payload of the first attribute of type `ty`.
pub fn find(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(buf)
        .into_iter()
        .find(|(t, _)| *t == ty)
        .map(|(_, v)| v)
}

/// The top-level attributes of a message, as (type without flags, payload).
pub fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((ty, &buf[4..len]));
        let step = (len + 3) & !3;
        buf = buf.get(step..).unwrap_or(&[]);
    }
    out
}

/// A NUL-terminated string attribute's text.
pub fn attr_str(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested() {
        let mut a = Attrs::default();
        a.put_str(1, "nat");
        assert_eq!(a.bytes, [8, 0, 1, 0, b'n', b'a', b't', 0]);
        let mut a = Attrs::default();
        let n = a.begin(4);
        a.put_be32(2, 0x0102_0304);
        a.end(n);
        assert_eq!(a.bytes, [12, 0, 4, 0x80, 8, 0, 2, 0, 1, 2, 3, 4]);
        let mut a = Attrs::default();
        a.put(3, &[9]);
        assert_eq!(a.bytes, [5, 0, 3, 0, 9, 0, 0, 0]);
        assert_eq!(attrs(&a.bytes), vec![(3, &[9u8][..])]);
    }

    #[test]
    fn a_batch_is_framed_and_numbered() {
        let mut b = Batch::new(100);
        b.new_chain("nat", "KUBE-SEP-X");
        b.flush_chain("nat", "KUBE-SEP-X");
        assert_eq!(b.len(), 2);
        let (bytes, what) = b.finish();
        let msgs = replies(&bytes).unwrap();
        assert_eq!(msgs.len(), 4);
        assert_eq!(
            msgs[0],
            Reply::Other {
                ty: NFNL_MSG_BATCH_BEGIN,
                seq: 100
            }
        );
        match &msgs[1] {
            Reply::Nft { msg, seq, attrs: a } => {
                assert_eq!((*msg, *seq), (NFT_MSG_NEWCHAIN, 101));
                let a = attrs(a);
                assert_eq!(a[0].0, NFTA_CHAIN_TABLE);
                assert_eq!(attr_str(a[1].1), "KUBE-SEP-X");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            msgs[3],
            Reply::Other {
                ty: NFNL_MSG_BATCH_END,
                seq: 103
            }
        );
        assert_eq!(what.what(101), "create chain KUBE-SEP-X");
        assert_eq!(what.what(102), "flush chain KUBE-SEP-X");
        assert_eq!(what.next_seq(), 104);
        // The begin marker names the nf_tables subsystem in res_id, big-endian.
        assert_eq!(&bytes[16..20], &[0, 0, 0, 10]);
    }

    #[test]
    fn error_replies_carry_the_errno_and_sequence() {
        // NLMSG_ERROR for seq 7 with -EBUSY (16), followed by the echoed header.
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&(-16i32).to_ne_bytes());
        m.extend_from_slice(&[0; 16]);
        assert_eq!(
            replies(&m).unwrap(),
            vec![Reply::Error { seq: 7, errno: 16 }]
        );
        assert_eq!(
            replies(&m[..20]),
            None,
            "a message longer than the datagram"
        );
        let mut bad = m.clone();
        bad[0] = 200;
        assert_eq!(replies(&bad), None);
    }
}
