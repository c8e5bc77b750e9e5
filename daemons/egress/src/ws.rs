//! WebSocket messages from the agent, judged before they go on.
//!
//! After the upgrade, what the agent sends is parsed into frames (RFC 6455): each message is
//! unmasked, reassembled from its fragments, inflated when permessage-deflate (RFC 7692) is on
//! (one inflater for the connection, as context takeover needs), and inspected together with
//! the tail of the messages before it, so a secret split over several messages is seen whole.
//! A message's frames are held until it is judged; a message that carries something closes
//! the connection with 1008 (policy violation) towards the agent, and nothing of it goes on.
//! What goes on is written afresh, not copied: the agent chooses a frame's masking key, its
//! reserved bits and opcodes and how its length is spelled, bytes no scan reads, so egress
//! masks each frame with a key of its own, spells its length the shortest way, and refuses the
//! reserved bits and opcodes RFC 6455 leaves to extensions (1002). What the origin sends back
//! is copied as it comes.

use crate::dlp::DlpScope;
use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest message (after inflating) judged; a larger one closes the connection (1009).
pub const MAX_MESSAGE: usize = 16 << 20;

/// Bytes of earlier messages each message is inspected with.
const CARRY: usize = 4 << 10;

/// Why a connection was closed, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The close code sent to the agent.
    pub code: u16,
    /// Why.
    pub reason: String,
}

/// One parsed frame: its header fields and its unmasked payload.
struct Frame {
    fin: bool,
    rsv1: bool,
    /// RSV2 or RSV3: no extension egress agrees to defines them.
    rsv23: bool,
    opcode: u8,
    masked: bool,
    payload: Vec<u8>,
}

impl Frame {
    /// Why the frame breaks RFC 6455 (or RFC 7692 on a connection with `deflate`), if it does.
    fn breach(&self, deflate: bool) -> Option<&'static str> {
        let control = self.opcode >= 0x8;
        if !self.masked {
            Some("an unmasked frame from the client")
        } else if self.rsv23 {
            Some("a frame with reserved bits set")
        } else if matches!(self.opcode, 0x3..=0x7 | 0xb..=0xf) {
            Some("a frame with a reserved opcode")
        } else if self.rsv1 && (!deflate || control || self.opcode == 0x0) {
            Some("a compressed-message bit where no compressed message can begin")
        } else if control && (!self.fin || self.payload.len() > 125) {
            Some("a control frame fragmented or over 125 bytes")
        } else {
            None
        }
    }

    /// The frame as egress sends it on: the same fields and payload, masked with `key`, the
    /// length spelled the shortest way.
    fn encode(&self, key: [u8; 4], out: &mut Vec<u8>) {
        out.push((u8::from(self.fin) << 7) | (u8::from(self.rsv1) << 6) | self.opcode);
        let len = self.payload.len();
        match u16::try_from(len) {
            Ok(n) if n < 126 => out.push(0x80 | n as u8),
            Ok(n) => {
                out.push(0x80 | 126);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Err(_) => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&key);
        out.extend(
            self.payload
                .iter()
                .zip(key.iter().cycle())
                .map(|(b, k)| b ^ k),
        );
    }
}

/// Masking keys for the frames egress sends on: its own, from the system's random source (RFC
/// 6455 §5.3 wants them unpredictable), drawn 64 at a time.
struct Masks {
    rng: ring::rand::SystemRandom,
    keys: [u8; 256],
    used: usize,
}

impl Masks {
    fn new() -> Self {
        Masks {
            rng: ring::rand::SystemRandom::new(),
            keys: [0; 256],
            used: 256,
        }
    }

    /// The next key; `Err` when the system gives no randomness (the connection closes).
    fn next(&mut self) -> Result<[u8; 4], Closed> {
        use ring::rand::SecureRandom as _;
        if self.used == self.keys.len() {
            self.rng.fill(&mut self.keys).map_err(|_| Closed {
                code: 1011,
                reason: "egress could not draw a masking key".into(),
            })?;
            self.used = 0;
        }
        let k = &self.keys[self.used..self.used + 4];
        self.used += 4;
        Ok([k[0], k[1], k[2], k[3]])
    }
}

/// Parse one frame from the front of `buf`, if it is all there; `Err` for one too large.
fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or([0xff; 8])), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_MESSAGE)
        .ok_or_else(|| format!("a frame of {len} bytes is more than egress judges"))?;
    let key = if masked {
        let Some(k) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([k[0], k[1], k[2], k[3]])
    } else {
        None
    };
    let Some(body) = buf.get(at..at + len) else {
        return Ok(None);
    };
    let mut payload = body.to_vec();
    if let Some(k) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    Ok(Some((
        Frame {
            fin: b0 & 0x80 != 0,
            rsv1: b0 & 0x40 != 0,
            rsv23: b0 & 0x30 != 0,
            opcode: b0 & 0x0f,
            masked,
            payload,
        },
        at + len,
    )))
}

/// The judging state of one connection's agent-to-origin direction.
pub struct Judge<'s> {
    dlp: &'s DlpScope,
    /// permessage-deflate's inflater, when the extension was agreed.
    inflate: Option<Decompress>,
    /// The message being reassembled: compressed?, payload so far, frames held (as egress
    /// sends them on).
    message: Option<(bool, Vec<u8>, Vec<u8>)>,
    /// The tail of earlier messages' text.
    carry: Vec<u8>,
    /// Whether permessage-deflate was agreed.
    deflate: bool,
    /// Egress's masking keys.
    masks: Masks,
}

impl<'s> Judge<'s> {
    /// A judge for a connection; `deflate` when the 101 agreed permessage-deflate.
    pub fn new(dlp: &'s DlpScope, deflate: bool) -> Self {
        Judge {
            dlp,
            inflate: deflate.then(|| Decompress::new(false)),
            message: None,
            carry: Vec::new(),
            deflate,
            masks: Masks::new(),
        }
    }

    /// Take what frames `buf` holds from its front; the bytes that may go on now, or why the
    /// connection closes.
    pub fn feed(&mut self, buf: &mut Vec<u8>) -> Result<Vec<u8>, Closed> {
        let mut out = Vec::new();
        loop {
            let (frame, used) = match parse(buf) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(out),
                Err(reason) => return Err(Closed { code: 1009, reason }),
            };
            buf.drain(..used);
            if let Some(reason) = frame.breach(self.deflate) {
                return Err(Closed {
                    code: 1002,
                    reason: reason.into(),
                });
            }
            let key = self.masks.next()?;
            match frame.opcode {
                // Control frames stand alone; their few bytes are judged alone.
                0x8..=0xf => {
                    self.judge(&frame.payload)?;
                    frame.encode(key, &mut out);
                }
                0x0 => {
                    let Some((_, payload, held)) = &mut self.message else {
                        return Err(Closed {
                            code: 1002,
                            reason: "a continuation frame with no message".into(),
                        });
                    };
                    payload.extend_from_slice(&frame.payload);
                    frame.encode(key, held);
                    if payload.len() > MAX_MESSAGE {
                        return Err(too_big());
                    }
                }
                _ => {
                    if self.message.is_some() {
                        return Err(Closed {
                            code: 1002,
                            reason: "a new message before the last one ended".into(),
                        });
                    }
                    let mut held = Vec::with_capacity(frame.payload.len() + 14);
                    frame.encode(key, &mut held);
                    self.message = Some((frame.rsv1, frame.payload, held));
                }
            }
            if frame.fin
                && frame.opcode < 0x8
                && let Some((compressed, payload, held)) = self.message.take()
            {
                let text = if compressed {
                    self.inflated(payload)?
                } else {
                    payload
                };
                self.judge(&text)?;
                out.extend_from_slice(&held);
            }
        }
    }

    /// One message's payload inflated (RFC 7692 §7.2.2: the empty block's tail appended).
    fn inflated(&mut self, mut payload: Vec<u8>) -> Result<Vec<u8>, Closed> {
        let Some(inflate) = &mut self.inflate else {
            return Err(Closed {
                code: 1002,
                reason: "a compressed message on a connection without permessage-deflate".into(),
            });
        };
        payload.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(payload.len() * 2);
        let mut consumed = 0;
        loop {
            out.reserve(64 << 10);
            let (before_in, before_out) = (inflate.total_in(), out.len());
            let status = inflate
                .decompress_vec(&payload[consumed..], &mut out, FlushDecompress::Sync)
                .map_err(|e| Closed {
                    code: 1007,
                    reason: format!("a message that does not inflate: {e}"),
                })?;
            consumed += usize::try_from(inflate.total_in() - before_in).unwrap_or(usize::MAX);
            if out.len() > MAX_MESSAGE {
                return Err(too_big());
            }
            if status == Status::StreamEnd {
                // A final block ends this deflate stream; the next message starts a fresh one
                // (as the server's inflater does), so the relay's must not stay ended and judge
                // every later message as empty. What follows the end in this message beyond
                // the appended tail could be read otherwise by the server: refused.
                inflate.reset(false);
                if consumed + 4 >= payload.len() {
                    return Ok(out);
                }
                return Err(Closed {
                    code: 1007,
                    reason: "a message with data after its deflate stream's end".into(),
                });
            }
            let stuck = inflate.total_in() == before_in && out.len() == before_out;
            let done = consumed >= payload.len() && out.len() < out.capacity();
            if stuck && consumed < payload.len() {
                return Err(Closed {
                    code: 1007,
                    reason: "a message that does not inflate to its end".into(),
                });
            }
            if done || stuck {
                return Ok(out);
            }
        }
    }

    /// Inspect `text` after the carry of earlier messages.
    fn judge(&mut self, text: &[u8]) -> Result<(), Closed> {
        let mut window = std::mem::take(&mut self.carry);
        let fresh = window.len();
        window.extend_from_slice(text);
        if let Some(f) = self.dlp.inspect_after(&window, fresh) {
            let reason = format!("a message carries {}", f.rule);
            if self.dlp.refuses(&reason) {
                return Err(Closed { code: 1008, reason });
            }
        }
        let keep = window.len().saturating_sub(CARRY);
        window.drain(..keep);
        self.carry = window;
        Ok(())
    }
}

fn too_big() -> Closed {
    Closed {
        code: 1009,
        reason: format!(
            "a message over {} MiB is more than egress judges",
            MAX_MESSAGE >> 20
        ),
    }
}

/// A close frame from the server's side (unmasked) with `code` and a short reason.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut text = reason.as_bytes().to_vec();
    text.truncate(123);
    let mut f = vec![0x88, u8::try_from(text.len() + 2).unwrap_or(125)];
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(&text);
    f
}

/// Relay a WebSocket: the agent's messages judged, the origin's copied. Ends when either
/// side closes; `Err` when egress closed it for what a message carried.
pub async fn relay<A, O>(agent: A, origin: O, dlp: &DlpScope, deflate: bool) -> Result<(), Closed>
where
    A: AsyncRead + AsyncWrite + Unpin,
    O: AsyncRead + AsyncWrite + Unpin,
{
    let (mut agent_rx, mut agent_tx) = tokio::io::split(agent);
    let (mut origin_rx, mut origin_tx) = tokio::io::split(origin);
    let mut judge = Judge::new(dlp, deflate);
    let upstream = async {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = agent_rx.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                let _ = origin_tx.shutdown().await;
                return Ok::<(), Closed>(());
            }
            buf.extend_from_slice(&chunk[..n]);
            let out = judge.feed(&mut buf)?;
            if !out.is_empty() && origin_tx.write_all(&out).await.is_err() {
                return Ok(());
            }
        }
    };
    let downstream = tokio::io::copy(&mut origin_rx, &mut agent_tx);
    tokio::select! {
        r = upstream => {
            if let Err(closed) = &r {
                let _ = agent_tx.write_all(&close_frame(closed.code, &closed.reason)).await;
                let _ = agent_tx.shutdown().await;
            }
            r
        }
        _ = downstream => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A masked client frame.
    fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x12, 0x34, 0x56, 0x78];
        let mut f = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    fn token() -> String {
        format!("{}_{}", "ghp", "Qw3".repeat(12))
    }

    fn judged(dlp: &DlpScope, deflate: bool, frames: &[Vec<u8>]) -> Result<Vec<u8>, Closed> {
        let mut judge = Judge::new(dlp, deflate);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        // Byte by byte: frame parsing must not care how the stream is cut.
        for byte in frames.concat() {
            buf.push(byte);
            out.extend(judge.feed(&mut buf)?);
        }
        Ok(out)
    }

    /// A frame's fin, rsv1, opcode, unmasked payload and masking key.
    type Fields = (bool, bool, u8, Vec<u8>, [u8; 4]);

    /// Each frame of `bytes`.
    fn fields(mut bytes: &[u8]) -> Vec<Fields> {
        let mut out = Vec::new();
        while let Some((f, used)) = parse(bytes).unwrap() {
            let key_at = used - f.payload.len() - 4;
            let key = bytes[key_at..key_at + 4].try_into().unwrap();
            assert!(f.masked);
            out.push((f.fin, f.rsv1, f.opcode, f.payload, key));
            bytes = &bytes[used..];
        }
        assert!(bytes.is_empty());
        out
    }

    /// What the agent's frames and egress's say, masking keys aside; and that egress's keys
    /// are not the agent's.
    fn same_but_remasked(sent: &[Vec<u8>], went: &[u8]) {
        let sent = fields(&sent.concat());
        let went = fields(went);
        let strip = |v: &[Fields]| {
            v.iter()
                .map(|(a, b, c, d, _)| (*a, *b, *c, d.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&sent), strip(&went));
        assert!(sent.iter().zip(&went).any(|(a, b)| a.4 != b.4));
    }

    #[test]
    fn clean_messages_pass_remasked_and_a_secret_closes_with_1008() {
        let s = DlpScope::defaults(crate::log::AccessLog::new(false));
        let frames = vec![
            frame(true, false, 1, b"hello"),
            frame(true, false, 9, b"ping"),
            frame(true, false, 2, &[0, 1, 2, 3]),
            frame(true, false, 2, &[7; 300]),
        ];
        same_but_remasked(&frames, &judged(&s, false, &frames).unwrap());
        let t = token();
        let bad = vec![frame(true, false, 1, format!("data {t}").as_bytes())];
        assert_eq!(judged(&s, false, &bad).unwrap_err().code, 1008);
    }

    #[test]
    fn a_secret_across_fragments_or_messages_is_found() {
        let s = DlpScope::defaults(crate::log::AccessLog::new(false));
        let t = token();
        let (a, b) = t.split_at(10);
        let fragments = vec![
            frame(false, false, 1, a.as_bytes()),
            frame(true, false, 0, b.as_bytes()),
        ];
        assert_eq!(judged(&s, false, &fragments).unwrap_err().code, 1008);
        let messages = vec![
            frame(true, false, 1, a.as_bytes()),
            frame(true, false, 1, b.as_bytes()),
        ];
        assert_eq!(judged(&s, false, &messages).unwrap_err().code, 1008);
    }

    #[test]
    fn permessage_deflate_is_inflated_with_context_takeover() {
        let s = DlpScope::defaults(crate::log::AccessLog::new(false));
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut deflated = |text: &[u8]| {
            let mut out = Vec::with_capacity(text.len() + 64);
            c.compress_vec(text, &mut out, flate2::FlushCompress::Sync)
                .unwrap();
            out.truncate(out.len() - 4);
            out
        };
        let clean1 = deflated(b"hello hello hello");
        let clean2 = deflated(b"hello hello hello again");
        let frames = vec![frame(true, true, 1, &clean1), frame(true, true, 1, &clean2)];
        same_but_remasked(&frames, &judged(&s, true, &frames).unwrap());
        let bad = deflated(format!("now {}", token()).as_bytes());
        let frames = vec![
            frame(true, true, 1, &clean1),
            frame(true, true, 1, &clean2),
            frame(true, true, 1, &bad),
        ];
        // A fresh judge would not know the earlier context; this one replays it.
        assert_eq!(judged(&s, true, &frames).unwrap_err().code, 1008);
        let _ = std::io::sink().write(b"");
    }

    #[test]
    fn a_final_deflate_block_does_not_blind_the_inflater_to_later_messages() {
        let s = DlpScope::defaults(crate::log::AccessLog::new(false));
        // Each message its own finished deflate stream, as a client without context
        // takeover may send it: a BFINAL block, then the sync tail.
        let finished = |text: &[u8]| {
            let mut c = flate2::Compress::new(flate2::Compression::default(), false);
            let mut out = Vec::with_capacity(text.len() + 64);
            c.compress_vec(text, &mut out, flate2::FlushCompress::Finish)
                .unwrap();
            out
        };
        let frames = vec![
            frame(true, true, 1, &finished(b"hello")),
            frame(
                true,
                true,
                1,
                &finished(format!("now {}", token()).as_bytes()),
            ),
        ];
        assert_eq!(judged(&s, true, &frames).unwrap_err().code, 1008);
    }

    #[test]
    fn what_only_the_agent_chose_of_a_frame_does_not_go_on() {
        let s = DlpScope::defaults(crate::log::AccessLog::new(false));
        // A length spelled the long way goes on spelled the short way.
        let mut long = vec![0x81, 0x80 | 127];
        long.extend_from_slice(&5u64.to_be_bytes());
        long.extend_from_slice(&[0; 4]);
        long.extend_from_slice(b"hello");
        let went = judged(&s, false, &[long]).unwrap();
        assert_eq!(went[1], 0x80 | 5);
        assert_eq!(fields(&went)[0].3, b"hello");
        // Reserved bits and opcodes, an unmasked frame, a long or fragmented control frame, a
        // compressed bit where none may be, a message begun inside another: refused.
        let mut unmasked = vec![0x81, 0x02];
        unmasked.extend_from_slice(b"hi");
        let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
            (
                "rsv2",
                vec![{
                    let mut f = frame(true, false, 1, b"x");
                    f[0] |= 0x20;
                    f
                }],
            ),
            (
                "rsv3",
                vec![{
                    let mut f = frame(true, false, 1, b"x");
                    f[0] |= 0x10;
                    f
                }],
            ),
            ("opcode 3", vec![frame(true, false, 3, b"x")]),
            ("opcode 0xb", vec![frame(true, false, 0xb, b"x")]),
            ("unmasked", vec![unmasked]),
            ("long ping", vec![frame(true, false, 9, &[0; 126])]),
            ("fragmented ping", vec![frame(false, false, 9, b"x")]),
            ("rsv1 without deflate", vec![frame(true, true, 1, b"x")]),
            (
                "message in a message",
                vec![frame(false, false, 1, b"a"), frame(true, false, 1, b"b")],
            ),
        ];
        for (what, frames) in cases {
            assert_eq!(judged(&s, false, &frames).unwrap_err().code, 1002, "{what}");
        }
        // rsv1 on a continuation, even with deflate agreed.
        let frames = vec![frame(false, true, 1, b"a"), frame(true, true, 0, b"b")];
        assert_eq!(judged(&s, true, &frames).unwrap_err().code, 1002);
    }

    #[test]
    fn a_giant_frame_and_a_stray_continuation_close_the_connection() {
        let s = DlpScope::defaults(crate::log::AccessLog::new(false));
        let mut giant = vec![0x82, 0xff];
        giant.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(judged(&s, false, &[giant]).unwrap_err().code, 1009);
        assert_eq!(
            judged(&s, false, &[frame(true, false, 0, b"x")])
                .unwrap_err()
                .code,
            1002
        );
    }
}
