//! A small SMTP receiver on loopback that stores each message once per idempotency key.
//!
//! It speaks the plain SMTP dialogue a client such as lettre uses (EHLO/HELO, MAIL, RCPT,
//! DATA with dot-unstuffing, RSET, NOOP, QUIT) on std TCP, one thread per connection. It
//! answers `250` to DATA only after the message is on disk (written to a temporary file,
//! fsynced, renamed), so a message it acknowledged is never lost. A message whose
//! `X-Idempotency-Key` it has already stored is acknowledged but not stored again; the
//! set of seen keys is rebuilt from the spool at start, so this holds across restarts.
//!
//! Fault injection: recipients at `@bounce.invalid` are refused with `550` (a permanent
//! error), and a share of DATA commands can be answered `451` (a transient one).

use super::dedup::{Keys, Reserve};
use anyhow::{Context, Result};
use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The header carrying a message's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "X-Idempotency-Key";
/// Recipients in this domain are refused permanently (fault injection).
pub const BOUNCE_DOMAIN: &str = "bounce.invalid";
const MAX_MESSAGE: usize = 10 * 1024 * 1024;
const MAX_LINE: usize = 4096;

struct Shared {
    spool: PathBuf,
    keys: Keys,
    next_seq: AtomicU64,
    duplicates: AtomicU64,
    /// Share of DATA commands refused with 451, in parts per million.
    fail_ppm: AtomicU32,
    stop: AtomicBool,
}

/// A running SMTP receiver; stops when dropped.
pub struct SmtpReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

/// A message found in the spool.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    /// The spool file.
    pub file: PathBuf,
    /// Its idempotency key, if it had one.
    pub key: Option<String>,
    /// The `To:` header.
    pub to: String,
    /// The `Subject:` header.
    pub subject: String,
    /// Size in bytes.
    pub size: u64,
}

impl SmtpReceiver {
    /// Starts a receiver on `127.0.0.1:port` (0 = any free port) storing into `spool`.
    pub fn start(spool: &Path, port: u16, fail_rate: f64) -> Result<SmtpReceiver> {
        fs::create_dir_all(spool)
            .with_context(|| format!("cannot create mail spool {}", spool.display()))?;
        let existing = list(spool)?;
        let seen: HashSet<String> = existing.iter().filter_map(|m| m.key.clone()).collect();
        let next_seq = existing
            .iter()
            .filter_map(|m| m.file.file_stem()?.to_str()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let listener = TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("cannot listen for SMTP on 127.0.0.1:{port}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            spool: spool.to_path_buf(),
            keys: Keys::new(seen),
            next_seq: AtomicU64::new(next_seq),
            duplicates: AtomicU64::new(0),
            fail_ppm: AtomicU32::new(to_ppm(fail_rate)),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("smtp-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let s = s.clone();
                    let _ = std::thread::Builder::new()
                        .name("smtp-session".into())
                        .spawn(move || {
                            if let Err(e) = session(&s, conn) {
                                tracing::debug!("smtp session ended: {e:#}");
                            }
                        });
                }
            })?;
        Ok(SmtpReceiver {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the share of DATA commands refused with a transient `451`.
    pub fn set_fail_rate(&self, rate: f64) {
        self.shared.fail_ppm.store(to_ppm(rate), Ordering::SeqCst);
    }

    /// Messages delivered again with a key already stored (acknowledged, not stored).
    pub fn duplicates(&self) -> u64 {
        self.shared.duplicates.load(Ordering::SeqCst)
    }

    /// Stops accepting connections.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

impl Drop for SmtpReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn to_ppm(rate: f64) -> u32 {
    (rate.clamp(0.0, 1.0) * 1_000_000.0) as u32
}

/// Lists the messages in a spool, in arrival order.
pub fn list(spool: &Path) -> Result<Vec<StoredMessage>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(spool) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", spool.display())),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("eml") {
            continue;
        }
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        out.push(StoredMessage {
            size: text.len() as u64,
            key: header(&text, IDEMPOTENCY_HEADER),
            to: header(&text, "To").unwrap_or_default(),
            subject: header(&text, "Subject").unwrap_or_default(),
            file: path,
        });
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(out)
}

/// The value of header `name` in a message's header section (case-insensitive name,
/// folded continuation lines joined).
pub fn header(message: &str, name: &str) -> Option<String> {
    let mut lines = message.split("\r\n").flat_map(|l| l.split('\n')).peekable();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            return None;
        }
        let Some((n, v)) = line.split_once(':') else {
            continue;
        };
        if n.eq_ignore_ascii_case(name) {
            let mut value = v.trim().to_string();
            while let Some(next) = lines.peek() {
                if next.starts_with(' ') || next.starts_with('\t') {
                    value.push(' ');
                    value.push_str(next.trim());
                    lines.next();
                } else {
                    break;
                }
            }
            return Some(value);
        }
    }
    None
}

fn reply(w: &mut TcpStream, line: &str) -> std::io::Result<()> {
    w.write_all(line.as_bytes())?;
    w.write_all(b"\r\n")
}

/// Reads one CRLF (or LF) terminated line; `None` at end of stream.
fn read_line(r: &mut BufReader<TcpStream>, buf: &mut Vec<u8>) -> std::io::Result<Option<()>> {
    buf.clear();
    let n = Read::by_ref(r)
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "line too long",
        ));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(()))
}

fn session(shared: &Shared, stream: TcpStream) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    // Replies go out in several small writes; without this, Nagle's algorithm and the
    // client's delayed ACK stall every multi-line reply by tens of milliseconds.
    stream.set_nodelay(true)?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    reply(&mut w, "220 switchyard-mail ESMTP ready")?;
    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = Vec::new();
    while read_line(&mut r, &mut line)?.is_some() {
        let text = String::from_utf8_lossy(&line).to_string();
        let upper = text.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("");
        match verb {
            "EHLO" => {
                from = None;
                rcpts.clear();
                reply(&mut w, "250-switchyard-mail")?;
                reply(&mut w, "250-8BITMIME")?;
                reply(&mut w, &format!("250 SIZE {MAX_MESSAGE}"))?;
            }
            "HELO" => {
                from = None;
                rcpts.clear();
                reply(&mut w, "250 switchyard-mail")?;
            }
            "MAIL" if upper.starts_with("MAIL FROM:") => match angle_addr(&text[10..]) {
                Some(addr) => {
                    from = Some(addr);
                    rcpts.clear();
                    reply(&mut w, "250 2.1.0 sender ok")?;
                }
                None => reply(&mut w, "501 5.5.4 syntax: MAIL FROM:<address>")?,
            },
            "RCPT" if upper.starts_with("RCPT TO:") => {
                if from.is_none() {
                    reply(&mut w, "503 5.5.1 MAIL first")?;
                    continue;
                }
                match angle_addr(&text[8..]) {
                    Some(addr)
                        if addr
                            .to_ascii_lowercase()
                            .ends_with(&format!("@{BOUNCE_DOMAIN}")) =>
                    {
                        reply(&mut w, "550 5.1.1 mailbox unavailable")?
                    }
                    Some(addr) if addr.contains('@') => {
                        rcpts.push(addr);
                        reply(&mut w, "250 2.1.5 recipient ok")?;
                    }
                    _ => reply(&mut w, "501 5.1.3 bad recipient address")?,
                }
            }
            "DATA" => {
                if rcpts.is_empty() {
                    reply(&mut w, "503 5.5.1 RCPT first")?;
                    continue;
                }
                reply(&mut w, "354 end data with <CR><LF>.<CR><LF>")?;
                let mut msg = String::new();
                let mut too_big = false;
                loop {
                    // lettre writes the body and the final "." in two writes; the
                    // client's Nagle waits for our ACK of the body, which Linux delays
                    // by ~40 ms unless asked to acknowledge at once.
                    quick_ack(&w);
                    if read_line(&mut r, &mut line)?.is_none() {
                        return Ok(()); // the client went away mid-message: nothing stored
                    }
                    if line == b"." {
                        break;
                    }
                    let body = if line.first() == Some(&b'.') {
                        &line[1..]
                    } else {
                        &line[..]
                    };
                    if msg.len() + body.len() > MAX_MESSAGE {
                        too_big = true;
                    } else {
                        msg.push_str(&String::from_utf8_lossy(body));
                        msg.push_str("\r\n");
                    }
                }
                let answer = if too_big {
                    "552 5.3.4 message too big".to_string()
                } else {
                    accept(shared, &msg)?
                };
                from = None;
                rcpts.clear();
                reply(&mut w, &answer)?;
            }
            "RSET" => {
                from = None;
                rcpts.clear();
                reply(&mut w, "250 2.0.0 reset")?;
            }
            "NOOP" => reply(&mut w, "250 2.0.0 ok")?,
            "VRFY" => reply(&mut w, "252 2.5.0 cannot verify")?,
            "QUIT" => {
                reply(&mut w, "221 2.0.0 bye")?;
                let _ = w.shutdown(Shutdown::Both);
                return Ok(());
            }
            _ => reply(&mut w, "502 5.5.2 command not recognized")?,
        }
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn quick_ack(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_tcp_quickack(true);
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn quick_ack(_: &TcpStream) {}

/// The address inside `<...>` (parameters after it are ignored).
fn angle_addr(rest: &str) -> Option<String> {
    let rest = rest.trim();
    let start = rest.find('<')?;
    let end = rest[start..].find('>')? + start;
    Some(rest[start + 1..end].trim().to_string())
}

/// Decides what to do with a complete message and stores it; returns the reply line.
fn accept(shared: &Shared, msg: &str) -> Result<String> {
    let ppm = shared.fail_ppm.load(Ordering::SeqCst);
    if ppm > 0 && rand::random_range(0..1_000_000) < ppm {
        return Ok("451 4.3.0 temporary failure (injected)".into());
    }
    let key = header(msg, IDEMPOTENCY_HEADER);
    if let Some(k) = &key {
        match shared.keys.reserve(k) {
            Reserve::Fresh => {}
            Reserve::Stored => {
                shared.duplicates.fetch_add(1, Ordering::SeqCst);
                return Ok("250 2.0.0 already delivered; not stored again".into());
            }
            Reserve::Busy => {
                return Ok("451 4.3.0 the same message is being stored; try again".into());
            }
        }
    }
    let seq = shared.next_seq.fetch_add(1, Ordering::SeqCst);
    let path = shared.spool.join(format!("{seq:08}.eml"));
    let tmp = shared.spool.join(format!("{seq:08}.tmp"));
    let written = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(msg.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    if let Some(k) = &key {
        shared.keys.finish(k, written.is_ok());
    }
    match written {
        Ok(()) => Ok(format!("250 2.0.0 stored as {seq:08}")),
        Err(e) => {
            tracing::error!("SMTP receiver cannot store a message: {e}");
            Ok("452 4.3.1 cannot store the message now".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_is_case_insensitive_and_unfolds() {
        let m = "Subject: hi\r\nx-idempotency-key: abc\r\n def\r\n\r\nX-Idempotency-Key: body";
        assert_eq!(header(m, IDEMPOTENCY_HEADER).as_deref(), Some("abc def"));
        assert_eq!(header(m, "subject").as_deref(), Some("hi"));
        assert_eq!(header(m, "To"), None);
    }

    #[test]
    fn angle_addresses() {
        assert_eq!(angle_addr(" <a@b> BODY=8BITMIME").as_deref(), Some("a@b"));
        assert_eq!(angle_addr("a@b"), None);
    }
}
