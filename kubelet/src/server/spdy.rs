//! SPDY/3.1 framing, as kubectl's port-forward speaks it (moby/spdystream under
//! k8s.io/apimachinery/pkg/util/httpstream/spdy): frames in and out of a byte stream, and
//! the zlib-compressed name/value header blocks.
//!
//! Pure codec: [`Decoder`] turns bytes into [`Frame`]s, [`Encoder`] the reverse; neither does
//! I/O. Each keeps the one zlib context SPDY/3 §2.6.10 prescribes per direction: every header
//! block of a connection continues the same deflate stream (ended by a sync flush), primed
//! with the SPDY/3 dictionary, so the decoder and encoder must see every header-bearing
//! frame of their direction, in order.
//!
//! Flow control (WINDOW_UPDATE) is decoded but not acted on: spdystream neither sends window
//! updates nor honours them, so a sender that waited for them would stall.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;

/// Frame types (SPDY/3 §2.6).
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// FLAG_FIN on data and control frames: the sender's half of the stream is closed.
const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL on SYN_STREAM.
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// FLAG_SETTINGS_CLEAR_SETTINGS.
const FLAG_CLEAR_SETTINGS: u8 = 0x01;

/// RST_STREAM status codes (SPDY/3 §2.6.3) this kubelet sends.
pub mod status {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
}

/// The frame header is 8 bytes; the length field is 24 bits.
const FRAME_HEADER_LEN: usize = 8;
/// Largest decompressed header block accepted: kubectl's blocks are a few dozen bytes, and a
/// bound keeps a hostile peer from inflating a small frame into gigabytes.
const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// Errors of the SPDY codec.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("spdy control frame has version {version}, only version 3 is spoken")]
    UnsupportedVersion { version: u16 },
    #[error("spdy {frame} frame is {length} bytes long, it needs at least {need}")]
    FrameTooShort {
        frame: &'static str,
        length: usize,
        need: usize,
    },
    #[error("spdy header block is malformed: {reason}")]
    HeaderBlock { reason: String },
    #[error("spdy header block inflates beyond {limit} bytes")]
    HeaderBlockTooLarge { limit: usize },
    #[error("cannot decompress a spdy header block")]
    Decompress {
        #[source]
        source: flate2::DecompressError,
    },
    #[error("cannot compress a spdy header block")]
    Compress {
        #[source]
        source: flate2::CompressError,
    },
    #[error("spdy frame payload of {length} bytes exceeds the 24-bit length field")]
    FrameTooLong { length: usize },
}

/// A SPDY name/value header block: names are lowercase on the wire (spdystream lowercases
/// them), several values of one name are joined by NUL bytes (SPDY/3 §2.6.10).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name`, compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or(""))
    }
}

/// One SPDY/3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        clear: bool,
        /// (flags, id, value) per entry.
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame of a type this codec does not know; SPDY/3 §2.2.1 says to ignore it.
    Unknown {
        frame_type: u16,
    },
}

impl Frame {
    /// A data frame.
    pub fn data(stream_id: u32, data: impl Into<Bytes>) -> Frame {
        Frame::Data {
            stream_id,
            fin: false,
            data: data.into(),
        }
    }

    /// An empty data frame with FLAG_FIN: this side will send nothing more on the stream.
    pub fn fin(stream_id: u32) -> Frame {
        Frame::Data {
            stream_id,
            fin: true,
            data: Bytes::new(),
        }
    }
}

/// The SPDY/3 header compression dictionary (SPDY/3 §2.6.10.1): length-prefixed header
/// names and common values, then a tail of common strings without prefixes.
fn dictionary() -> &'static [u8] {
    static DICT: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412",
            "413414415416417502504505203 Non-Authoritative Information204 No Content",
            "301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden",
            "404 Not Found500 Internal Server Error501 Not Implemented",
            "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
            " 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,",
            "image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
            "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
            "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1500);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    });
    &DICT
}

/// The uncompressed form of a header block: a 32-bit pair count, then per pair a 32-bit
/// length and the name, a 32-bit length and the value.
pub fn encode_header_block(headers: &Headers) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(headers.0.len() as u32).to_be_bytes());
    for (name, value) in &headers.0 {
        let name = name.to_ascii_lowercase();
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// Parses an uncompressed header block (see [`encode_header_block`]).
pub fn parse_header_block(mut block: &[u8]) -> Result<Headers, SpdyError> {
    fn take<'a>(block: &mut &'a [u8], what: &str) -> Result<&'a [u8], SpdyError> {
        if block.len() < 4 {
            return Err(SpdyError::HeaderBlock {
                reason: format!("it ends inside the length of {what}"),
            });
        }
        let len = block.get_u32() as usize;
        if block.len() < len {
            return Err(SpdyError::HeaderBlock {
                reason: format!(
                    "{what} declares {len} bytes but only {} remain",
                    block.len()
                ),
            });
        }
        let (v, rest) = block.split_at(len);
        *block = rest;
        Ok(v)
    }
    if block.len() < 4 {
        return Err(SpdyError::HeaderBlock {
            reason: format!("{} bytes cannot hold the pair count", block.len()),
        });
    }
    let count = block.get_u32() as usize;
    // Each pair takes at least 8 bytes: a count beyond that is a lie, not an allocation.
    if count > block.len() / 8 {
        return Err(SpdyError::HeaderBlock {
            reason: format!("it declares {count} pairs in {} bytes", block.len()),
        });
    }
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let name = take(&mut block, &format!("name {i}"))?;
        let value = take(&mut block, &format!("value {i}"))?;
        let name = std::str::from_utf8(name).map_err(|_| SpdyError::HeaderBlock {
            reason: format!("name {i} is not UTF-8"),
        })?;
        if name.is_empty() {
            return Err(SpdyError::HeaderBlock {
                reason: format!("name {i} is empty"),
            });
        }
        let value = String::from_utf8_lossy(value).into_owned();
        pairs.push((name.to_ascii_lowercase(), value));
    }
    if !block.is_empty() {
        return Err(SpdyError::HeaderBlock {
            reason: format!("{} bytes follow the last pair", block.len()),
        });
    }
    Ok(Headers(pairs))
}

/// Reads frames from received bytes.
pub struct Decoder {
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            inflate: Decompress::new(true),
        }
    }

    /// Takes the next whole frame off the front of `buf`; `Ok(None)` when `buf` holds only
    /// part of one (read more and call again). An error leaves the connection unusable: the
    /// header compression context may be out of step.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let length = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < FRAME_HEADER_LEN + length {
            buf.reserve(FRAME_HEADER_LEN + length - buf.len());
            return Ok(None);
        }
        buf.advance(FRAME_HEADER_LEN);
        let mut payload = buf.split_to(length).freeze();
        if word & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: word & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                data: payload,
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::UnsupportedVersion { version });
        }
        let frame_type = (word & 0xffff) as u16;
        let need = |frame: &'static str, n: usize| {
            if length < n {
                Err(SpdyError::FrameTooShort {
                    frame,
                    length,
                    need: n,
                })
            } else {
                Ok(())
            }
        };
        let fin = flags & FLAG_FIN != 0;
        let frame = match frame_type {
            SYN_STREAM => {
                need("SYN_STREAM", 10)?;
                let stream_id = payload.get_u32() & 0x7fff_ffff;
                let associated_to = payload.get_u32() & 0x7fff_ffff;
                let priority = payload.get_u8() >> 5;
                let _slot = payload.get_u8();
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self.inflate_block(&payload)?,
                }
            }
            SYN_REPLY | HEADERS => {
                need(
                    if frame_type == SYN_REPLY {
                        "SYN_REPLY"
                    } else {
                        "HEADERS"
                    },
                    4,
                )?;
                let stream_id = payload.get_u32() & 0x7fff_ffff;
                let headers = self.inflate_block(&payload)?;
                if frame_type == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                need("RST_STREAM", 8)?;
                Frame::RstStream {
                    stream_id: payload.get_u32() & 0x7fff_ffff,
                    status: payload.get_u32(),
                }
            }
            SETTINGS => {
                need("SETTINGS", 4)?;
                let count = payload.get_u32() as usize;
                if payload.len() / 8 < count {
                    return Err(SpdyError::FrameTooShort {
                        frame: "SETTINGS",
                        length,
                        need: 4 + count.saturating_mul(8),
                    });
                }
                let entries = (0..count)
                    .map(|_| {
                        let w = payload.get_u32();
                        ((w >> 24) as u8, w & 0x00ff_ffff, payload.get_u32())
                    })
                    .collect();
                Frame::Settings {
                    clear: flags & FLAG_CLEAR_SETTINGS != 0,
                    entries,
                }
            }
            PING => {
                need("PING", 4)?;
                Frame::Ping {
                    id: payload.get_u32(),
                }
            }
            GOAWAY => {
                need("GOAWAY", 4)?;
                let last_good_stream_id = payload.get_u32() & 0x7fff_ffff;
                // SPDY/2 peers omit the status; 0 is OK.
                let status = if payload.len() >= 4 {
                    payload.get_u32()
                } else {
                    0
                };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            WINDOW_UPDATE => {
                need("WINDOW_UPDATE", 8)?;
                Frame::WindowUpdate {
                    stream_id: payload.get_u32() & 0x7fff_ffff,
                    delta: payload.get_u32() & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { frame_type: other },
        };
        Ok(Some(frame))
    }

    /// Inflates one header block, continuing the connection's zlib stream. The first block
    /// names the SPDY dictionary (zlib FDICT); it is supplied when zlib asks for it.
    fn inflate_block(&mut self, input: &[u8]) -> Result<Headers, SpdyError> {
        let mut out: Vec<u8> = Vec::with_capacity(input.len() * 4 + 64);
        let mut consumed = 0;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let before = self.inflate.total_in();
            let result =
                self.inflate
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.inflate.total_in() - before) as usize;
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    let room_left = out.capacity() > out.len();
                    if consumed >= input.len() && room_left {
                        break;
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|source| SpdyError::Decompress { source })?;
                }
                Err(source) => return Err(SpdyError::Decompress { source }),
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::HeaderBlockTooLarge {
                    limit: MAX_HEADER_BLOCK,
                });
            }
        }
        parse_header_block(&out)
    }
}

/// Writes frames as bytes.
pub struct Encoder {
    deflate: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Encoder {
        let mut deflate = Compress::new(Compression::default(), true);
        // Priming with the dictionary before the first byte makes zlib write FDICT and the
        // dictionary's adler32, which the peer's inflater checks (SPDY/3 §2.6.10.1).
        deflate
            .set_dictionary(dictionary())
            .expect("a fresh deflate stream takes a dictionary");
        Encoder { deflate }
    }

    /// Appends `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), SpdyError> {
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                let len = u24(data.len())?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32((flag(*fin, FLAG_FIN) as u32) << 24 | len);
                out.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                fin,
                unidirectional,
                headers,
            } => {
                let block = self.deflate_block(headers)?;
                let flags = flag(*fin, FLAG_FIN) | flag(*unidirectional, FLAG_UNIDIRECTIONAL);
                control(out, SYN_STREAM, flags, 10 + block.len())?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(associated_to & 0x7fff_ffff);
                out.put_u8((priority & 0x07) << 5);
                out.put_u8(0);
                out.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            }
            | Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                let ty = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let block = self.deflate_block(headers)?;
                control(out, ty, flag(*fin, FLAG_FIN), 4 + block.len())?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                control(out, RST_STREAM, 0, 8)?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::Settings { clear, entries } => {
                control(
                    out,
                    SETTINGS,
                    flag(*clear, FLAG_CLEAR_SETTINGS),
                    4 + 8 * entries.len(),
                )?;
                out.put_u32(entries.len() as u32);
                for (flags, id, value) in entries {
                    out.put_u32((*flags as u32) << 24 | (id & 0x00ff_ffff));
                    out.put_u32(*value);
                }
            }
            Frame::Ping { id } => {
                control(out, PING, 0, 4)?;
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control(out, GOAWAY, 0, 8)?;
                out.put_u32(last_good_stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control(out, WINDOW_UPDATE, 0, 8)?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(delta & 0x7fff_ffff);
            }
            Frame::Unknown { frame_type } => control(out, *frame_type, 0, 0)?,
        }
        Ok(())
    }

    /// Compresses one header block, continuing this direction's zlib stream, ended by a
    /// sync flush so the peer can inflate it without the next one.
    fn deflate_block(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let raw = encode_header_block(headers);
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut consumed = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|source| SpdyError::Compress { source })?;
            consumed += (self.deflate.total_in() - before) as usize;
            // Done when all input is in and the flush did not fill the buffer.
            if consumed >= raw.len() && out.capacity() > out.len() {
                break;
            }
        }
        Ok(out)
    }
}

fn flag(on: bool, bit: u8) -> u8 {
    if on {
        bit
    } else {
        0
    }
}

fn u24(len: usize) -> Result<u32, SpdyError> {
    if len > 0x00ff_ffff {
        return Err(SpdyError::FrameTooLong { length: len });
    }
    Ok(len as u32)
}

fn control(out: &mut BytesMut, ty: u16, flags: u8, len: usize) -> Result<(), SpdyError> {
    let len = u24(len)?;
    out.put_u32(0x8000_0000 | (VERSION as u32) << 16 | ty as u32);
    out.put_u32((flags as u32) << 24 | len);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",enq=0."));
    }

    /// The start of a real `kubectl port-forward pod/web 18080:80` (kubectl v1.37.1, in
    /// a WebSocket tunnel), captured by tests/kubelet_portforward.rs: the error stream's
    /// SYN_STREAM, kubectl closing its side of it, the data stream's SYN_STREAM (its header
    /// block continues the same zlib stream) and the HTTP request on it.
    const KUBECTL_OPENING: &str = concat!(
        "800300010000003d0000000100000000000078f9e3c6a7c202253a48f95b044aab4c16060c0c0c9c",
        "4590d8ca04a5624603703a2c294a4dcc851635aca9a08800000000ffff0000000101000000800300",
        "010000001a00000003000000000000826a459502954289840c04000000ffff000000030000001d47",
        "4554202f20485454502f312e300d0a486f73743a20706f640d0a0d0a",
    );

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_real_kubectl_opening_decodes() {
        let mut buf = BytesMut::from(&unhex(KUBECTL_OPENING)[..]);
        let mut dec = Decoder::new();
        let mut frames = Vec::new();
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            frames.push(f);
        }
        assert!(buf.is_empty());
        let syn = |stream_id, kind: &str| Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            fin: false,
            unidirectional: false,
            headers: headers(&[("port", "80"), ("requestid", "0"), ("streamtype", kind)]),
        };
        let mut sorted = frames.clone();
        // Go writes an http.Header (a map) in any order: compare names sorted.
        for f in &mut sorted {
            if let Frame::SynStream { headers, .. } = f {
                headers.0.sort();
            }
        }
        assert_eq!(
            sorted,
            vec![
                syn(1, "error"),
                Frame::fin(1),
                syn(3, "data"),
                Frame::data(3, &b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n"[..]),
            ]
        );
    }

    /// zlib's FDICT field in kubectl's first header block is the dictionary's Adler-32.
    #[test]
    fn dictionary_checksum_matches_what_kubectl_announces() {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in dictionary() {
            a = (a + x as u32) % 65521;
            b = (b + a) % 65521;
        }
        let announced = &unhex(KUBECTL_OPENING)[20..24];
        assert_eq!((b << 16 | a).to_be_bytes(), announced);
    }

    #[test]
    fn header_block_round_trip() {
        let h = headers(&[("streamType", "data"), ("port", "80"), ("requestid", "7")]);
        let raw = encode_header_block(&h);
        let back = parse_header_block(&raw).unwrap();
        // Names go out lowercase, as spdystream writes them.
        assert_eq!(
            back,
            headers(&[("streamtype", "data"), ("port", "80"), ("requestid", "7")])
        );
        assert_eq!(back.get("streamType"), Some("data"));
        assert_eq!(back.get("missing"), None);
        let multi = headers(&[("accept", "a\0b")]);
        assert_eq!(
            parse_header_block(&encode_header_block(&multi))
                .unwrap()
                .get("Accept"),
            Some("a")
        );
    }

    #[test]
    fn bad_header_blocks_are_named() {
        let cases: &[(&[u8], &str)] = &[
            (b"\0\0", "2 bytes cannot hold the pair count"),
            (
                b"\0\0\0\x01\0\0\0\x09port\0\0\0\0",
                "name 0 declares 9 bytes but only 8 remain",
            ),
            (
                b"\xff\xff\xff\xff\0\0\0\0",
                "it declares 4294967295 pairs in 4 bytes",
            ),
            (b"\0\0\0\x01\0\0\0\0\0\0\0\0", "name 0 is empty"),
            (b"\0\0\0\0x", "1 bytes follow the last pair"),
        ];
        for (block, want) in cases {
            let e = parse_header_block(block).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("spdy header block is malformed: {want}")
            );
        }
    }

    fn every_frame() -> Vec<Frame> {
        vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: headers(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 1,
                priority: 7,
                fin: true,
                unidirectional: true,
                headers: headers(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: Headers::default(),
            },
            Frame::data(3, &b"GET / HTTP/1.0\r\n\r\n"[..]),
            Frame::fin(3),
            Frame::RstStream {
                stream_id: 3,
                status: status::CANCEL,
            },
            Frame::Settings {
                clear: true,
                entries: vec![(1, 4, 100), (0, 7, 65536)],
            },
            Frame::Ping { id: 9 },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
            Frame::Headers {
                stream_id: 5,
                fin: true,
                headers: headers(&[("x", "y")]),
            },
            Frame::WindowUpdate {
                stream_id: 5,
                delta: 1 << 20,
            },
            Frame::Unknown { frame_type: 42 },
        ]
    }

    #[test]
    fn frames_round_trip_through_one_compression_context() {
        let mut enc = Encoder::new();
        let mut dec = Decoder::new();
        let mut wire = BytesMut::new();
        let frames = every_frame();
        for f in &frames {
            enc.encode(f, &mut wire).unwrap();
        }
        let mut back = Vec::new();
        while let Some(f) = dec.decode(&mut wire).unwrap() {
            back.push(f);
        }
        assert_eq!(back, frames);
        assert!(wire.is_empty());
    }

    #[test]
    fn frames_arrive_in_pieces() {
        let mut enc = Encoder::new();
        let mut wire = BytesMut::new();
        for f in &every_frame() {
            enc.encode(f, &mut wire).unwrap();
        }
        // One byte at a time: a partial frame is Ok(None) and nothing is consumed.
        let mut dec = Decoder::new();
        let mut buf = BytesMut::new();
        let mut back = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                back.push(f);
            }
        }
        assert_eq!(back, every_frame());
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut dec = Decoder::new();
        // Control frame of version 2.
        let mut b = BytesMut::from(&b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01"[..]);
        assert_eq!(
            dec.decode(&mut b).unwrap_err().to_string(),
            "spdy control frame has version 2, only version 3 is spoken"
        );
        // RST_STREAM with a 4-byte body.
        let mut b = BytesMut::from(&b"\x80\x03\x00\x03\x00\x00\x00\x04\x00\x00\x00\x01"[..]);
        assert_eq!(
            dec.decode(&mut b).unwrap_err().to_string(),
            "spdy RST_STREAM frame is 4 bytes long, it needs at least 8"
        );
        // SYN_STREAM whose header block is not zlib.
        let mut b = BytesMut::from(
            &b"\x80\x03\x00\x01\x00\x00\x00\x0e\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00garb"[..],
        );
        assert!(matches!(
            dec.decode(&mut b),
            Err(SpdyError::Decompress { .. })
        ));
    }
}
