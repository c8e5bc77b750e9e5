//! pkt-lines (gitprotocol-common(5)): four hex digits of length, then the payload.

use std::io::{self, Read, Write};

/// The largest payload a pkt-line may carry.
pub const MAX_PAYLOAD: usize = 65516;

/// One pkt-line as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Pkt {
    /// `0000`.
    Flush,
    /// `0001` (protocol v2).
    Delim,
    /// `0002` (protocol v2).
    ResponseEnd,
    /// A payload.
    Data(Vec<u8>),
}

/// Why a pkt-line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PktError {
    /// The peer closed before the first byte.
    #[error("the connection closed before a request")]
    Closed,
    /// Not four hex digits, or a length below 4 that is no special packet.
    #[error("malformed pkt-line length {0:?}")]
    BadLength(String),
    /// Longer than the caller accepts.
    #[error("request of {0} bytes is over the limit of {1}")]
    TooLong(usize, usize),
    /// The socket failed or timed out.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Read one pkt-line whose payload is at most `max` bytes, byte-exact (nothing is read past
/// it, so the rest of the stream can go to git as it is).
pub fn read(r: &mut impl Read, max: usize) -> Result<Pkt, PktError> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Err(PktError::Closed),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    if !head.iter().all(u8::is_ascii_hexdigit) {
        return Err(PktError::BadLength(text));
    }
    let len = usize::from_str_radix(&text, 16).map_err(|_| PktError::BadLength(text.clone()))?;
    match len {
        0 => return Ok(Pkt::Flush),
        1 => return Ok(Pkt::Delim),
        2 => return Ok(Pkt::ResponseEnd),
        3 => return Err(PktError::BadLength(text)),
        _ => {}
    }
    let payload = len - 4;
    if payload > max.min(MAX_PAYLOAD) {
        return Err(PktError::TooLong(payload, max.min(MAX_PAYLOAD)));
    }
    let mut data = vec![0; payload];
    r.read_exact(&mut data)?;
    Ok(Pkt::Data(data))
}

/// Write `data` as one pkt-line.
pub fn write(w: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let data = &data[..data.len().min(MAX_PAYLOAD)];
    write!(w, "{:04x}", data.len() + 4)?;
    w.write_all(data)
}

/// The `ERR` packet a git client prints as `fatal: remote error: MSG`.
pub fn write_err(w: &mut impl Write, msg: &str) -> io::Result<()> {
    // One line: a newline inside would end the client's message early.
    let line: String = msg
        .chars()
        .map(|c| if c == '\n' { ' ' } else { c })
        .collect();
    write(w, format!("ERR {line}\n").as_bytes())?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_special_packets() {
        let mut buf = Vec::new();
        write(&mut buf, b"hello\n").unwrap();
        buf.extend_from_slice(b"00000001");
        let mut r = &buf[..];
        assert_eq!(read(&mut r, 100).unwrap(), Pkt::Data(b"hello\n".to_vec()));
        assert_eq!(read(&mut r, 100).unwrap(), Pkt::Flush);
        assert_eq!(read(&mut r, 100).unwrap(), Pkt::Delim);
        assert!(matches!(read(&mut r, 100), Err(PktError::Closed)));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [&b"zzzz"[..], b"0003", b"00", b"-001", b"0010abc"] {
            assert!(read(&mut &bad[..], 100).is_err(), "{bad:?}");
        }
        assert!(matches!(
            read(&mut &b"ffff"[..], 1024),
            Err(PktError::TooLong(65531, 1024))
        ));
    }

    #[test]
    fn err_packets_are_one_line() {
        let mut buf = Vec::new();
        write_err(&mut buf, "a\nb").unwrap();
        assert_eq!(buf, b"000cERR a b\n");
    }
}
