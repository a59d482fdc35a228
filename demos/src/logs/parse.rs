//! Parsing one access-log line (Apache/nginx "combined" format, optionally with a trailing
//! request-time field) into the few fields the metrics need, without allocating.

use memchr::{memchr, memrchr};

/// The HTTP methods counted by name; anything else is counted as `OTHER`.
pub(crate) const METHODS: [&str; 10] = [
    "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE", "OTHER",
];

/// Index of `OTHER` in [`METHODS`].
const OTHER_METHOD: usize = METHODS.len() - 1;

/// The fields of one well-formed line, borrowed from the line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    /// The client address (first field), as written.
    pub(crate) ip: &'a [u8],
    /// Minutes since 1970-01-01T00:00Z (UTC) of the request time stamp.
    pub(crate) minute: i64,
    /// Index into [`METHODS`].
    pub(crate) method: usize,
    /// The request target without its query string, if the request line has one.
    pub(crate) path: Option<&'a [u8]>,
    /// The response status, 0..=999.
    pub(crate) status: u16,
    /// Response body bytes (`-` counts as 0).
    pub(crate) bytes: u64,
    /// The trailing request-time field in microseconds, when present.
    pub(crate) request_time_us: Option<u64>,
}

/// Remembers the last time stamp parsed: consecutive log lines mostly share their minute.
#[derive(Debug, Default, Clone)]
pub(crate) struct MinuteCache {
    key: [u8; 22],
    minute: i64,
    valid: bool,
}

impl MinuteCache {
    fn head(&self) -> [u8; 17] {
        let mut h = [0; 17];
        h.copy_from_slice(&self.key[..17]);
        h
    }

    fn zone(&self) -> [u8; 5] {
        let mut z = [0; 5];
        z.copy_from_slice(&self.key[17..]);
        z
    }

    /// Minutes since the epoch (UTC) of `ts`, formatted `dd/Mon/yyyy:HH:MM:SS +hhmm`.
    fn minute(&mut self, ts: &[u8]) -> Option<i64> {
        if ts.len() != 26 {
            return None;
        }
        // The key is everything but the seconds: `dd/Mon/yyyy:HH:MM` and `+hhmm`.
        // Fixed-size comparisons: no call into a general memcmp on every line.
        let head: [u8; 17] = ts[..17].try_into().ok()?;
        let zone: [u8; 5] = ts[21..].try_into().ok()?;
        let same = self.valid && head == self.head() && zone == self.zone();
        if same {
            // Still validate the seconds so a damaged line is never accepted from the cache.
            if ts[17] == b':'
                && ts[18].is_ascii_digit()
                && ts[19].is_ascii_digit()
                && ts[20] == b' '
            {
                return Some(self.minute);
            }
            return None;
        }
        let minute = parse_timestamp(ts)?;
        self.key[..17].copy_from_slice(&ts[..17]);
        self.key[17..].copy_from_slice(&ts[21..]);
        self.minute = minute;
        self.valid = true;
        Some(minute)
    }
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 18 {
        return None;
    }
    let mut v: i64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

fn month(b: &[u8]) -> Option<i64> {
    Some(match b {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the classic era-based formula).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) of a day number since 1970-01-01; inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Formats minutes since the epoch as `YYYY-MM-DDTHH:MMZ`.
pub(crate) fn format_minute(minute: i64) -> String {
    let (y, m, d) = civil_from_days(minute.div_euclid(1440));
    let mod_ = minute.rem_euclid(1440);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}Z", mod_ / 60, mod_ % 60)
}

/// Parses `dd/Mon/yyyy:HH:MM:SS +hhmm` into minutes since the epoch (UTC).
fn parse_timestamp(ts: &[u8]) -> Option<i64> {
    if ts.len() != 26
        || ts[2] != b'/'
        || ts[6] != b'/'
        || ts[11] != b':'
        || ts[14] != b':'
        || ts[17] != b':'
        || ts[20] != b' '
    {
        return None;
    }
    let day = digits(&ts[0..2])?;
    let mon = month(&ts[3..6])?;
    let year = digits(&ts[7..11])?;
    let hour = digits(&ts[12..14])?;
    let min = digits(&ts[15..17])?;
    let sec = digits(&ts[18..20])?;
    if !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let sign = match ts[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let off_h = digits(&ts[22..24])?;
    let off_m = digits(&ts[24..26])?;
    let local = days_from_civil(year, mon, day) * 1440 + hour * 60 + min;
    Some(local - sign * (off_h * 60 + off_m))
}

/// Position of `b` in a short field: a plain loop beats a vectorised search on a few bytes.
#[inline]
fn find_short(b: u8, s: &[u8]) -> Option<usize> {
    s.iter().position(|&c| c == b)
}

/// Position of the closing quote in `s` (which starts just after an opening quote),
/// skipping quotes escaped with a backslash.
fn closing_quote(s: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let q = from + memchr(b'"', &s[from..])?;
        if q > 0 && s[q - 1] == b'\\' {
            from = q + 1;
        } else {
            return Some(q);
        }
    }
}

/// Parses seconds written as a decimal (`0.123`, `12`, `1.5`) into microseconds.
fn seconds_to_us(b: &[u8]) -> Option<u64> {
    let (int, frac) = match find_short(b'.', b) {
        Some(p) => (&b[..p], &b[p + 1..]),
        None => (b, &b[..0]),
    };
    if int.is_empty() || int.len() > 9 || frac.len() > 9 {
        return None;
    }
    let whole = digits(int)? as u64;
    let mut us: u64 = 0;
    for i in 0..6 {
        let d = match frac.get(i) {
            Some(c) if c.is_ascii_digit() => u64::from(c - b'0'),
            Some(_) => return None,
            None => 0,
        };
        us = us * 10 + d;
    }
    if frac.iter().skip(6).any(|c| !c.is_ascii_digit()) {
        return None;
    }
    Some(whole * 1_000_000 + us)
}

fn method_index(m: &[u8]) -> usize {
    METHODS[..OTHER_METHOD]
        .iter()
        .position(|name| name.as_bytes() == m)
        .unwrap_or(OTHER_METHOD)
}

/// Parses one line (without its line ending). `None` means the line is malformed.
///
/// Accepted: `IP IDENT USER [TIMESTAMP] "REQUEST" STATUS BYTES`, optionally followed by
/// `"REFERER" "USER-AGENT"`, optionally followed by more fields; when the last field
/// is a decimal number it is taken as the request time in seconds (nginx `$request_time`).
pub(crate) fn parse_line<'a>(line: &'a [u8], cache: &mut MinuteCache) -> Option<Entry<'a>> {
    let sp = find_short(b' ', line)?;
    let ip = &line[..sp];
    if ip.is_empty() {
        return None;
    }
    let rest = &line[sp + 1..];
    // Ident and user: the user may hold spaces, so look for the opening bracket.
    let b = find_short(b'[', rest)?;
    if b < 3 || rest[b - 1] != b' ' || !rest[..b - 1].contains(&b' ') {
        return None;
    }
    let rest = &rest[b + 1..];
    if rest.len() < 27 || rest[26] != b']' {
        return None;
    }
    let minute = cache.minute(&rest[..26])?;
    let rest = rest[27..].strip_prefix(b" \"")?;
    let q = closing_quote(rest)?;
    let request = &rest[..q];
    let rest = rest[q + 1..].strip_prefix(b" ")?;

    // The request line: METHOD TARGET [PROTOCOL].
    let (method, path) = match find_short(b' ', request) {
        Some(p) => {
            let target = &request[p + 1..];
            let target = match memchr(b' ', target) {
                Some(e) => &target[..e],
                None => target,
            };
            let target = match find_short(b'?', target) {
                Some(e) => &target[..e],
                None => target,
            };
            (method_index(&request[..p]), Some(target))
        }
        None => (OTHER_METHOD, None),
    };

    // Status: exactly three digits.
    if rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let status = digits(&rest[..3])? as u16;
    let rest = &rest[3..];
    let rest = match rest.first() {
        None => return None,
        Some(b' ') => &rest[1..],
        Some(_) => return None,
    };
    // Bytes: digits or '-'.
    let end = find_short(b' ', rest).unwrap_or(rest.len());
    let bytes = match &rest[..end] {
        b"-" => 0,
        d => digits(d)? as u64,
    };
    let mut rest = &rest[end..];

    // Optional `"referer" "user-agent"`: when present it must be complete.
    if let Some(r) = rest.strip_prefix(b" \"") {
        let q = closing_quote(r)?;
        let r = r[q + 1..].strip_prefix(b" \"")?;
        let q = closing_quote(r)?;
        rest = &r[q + 1..];
    }
    // Optional trailing fields; the last one may be the request time.
    let mut request_time_us = None;
    if !rest.is_empty() {
        if rest[0] != b' ' {
            return None;
        }
        let trimmed = rest.trim_ascii_end();
        let start = memrchr(b' ', trimmed).map_or(0, |p| p + 1);
        request_time_us = seconds_to_us(&trimmed[start..]);
    }
    Some(Entry {
        ip,
        minute,
        method,
        path,
        status,
        bytes,
        request_time_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<Entry<'_>> {
        parse_line(s.as_bytes(), &mut MinuteCache::default())
    }

    #[test]
    fn combined_with_request_time() {
        let e = parse(
            r#"203.0.113.7 - frank [10/Oct/2000:13:55:36 -0700] "GET /a/b?x=1 HTTP/1.1" 200 2326 "http://r/" "Mozilla/5.0 (X)" 0.123"#,
        )
        .unwrap();
        assert_eq!(e.ip, b"203.0.113.7");
        assert_eq!(e.method, 0);
        assert_eq!(e.path, Some(&b"/a/b"[..]));
        assert_eq!(e.status, 200);
        assert_eq!(e.bytes, 2326);
        assert_eq!(e.request_time_us, Some(123_000));
        assert_eq!(format_minute(e.minute), "2000-10-10T20:55Z");
    }

    #[test]
    fn common_format_and_dash_bytes() {
        let e = parse(r#"::1 - - [01/Jan/2026:00:00:00 +0000] "HEAD / HTTP/1.0" 304 -"#).unwrap();
        assert_eq!(e.bytes, 0);
        assert_eq!(METHODS[e.method], "HEAD");
        assert_eq!(e.request_time_us, None);
        assert_eq!(format_minute(e.minute), "2026-01-01T00:00Z");
    }

    #[test]
    fn escaped_quotes_and_odd_requests() {
        let e = parse(r#"1.2.3.4 - - [01/Jan/2026:00:00:00 +0100] "-" 408 0 "-" "say \"hi\"" 12"#)
            .unwrap();
        assert_eq!(METHODS[e.method], "OTHER");
        assert_eq!(e.path, None);
        assert_eq!(e.request_time_us, Some(12_000_000));
        assert_eq!(format_minute(e.minute), "2025-12-31T23:00Z");
    }

    #[test]
    fn malformed_lines() {
        for bad in [
            "",
            "garbage",
            r#"1.2.3.4 - - [01/Jan/2026:00:00:00 +0000] "GET / HTTP/1.1" 2x0 5"#,
            r#"1.2.3.4 - - [01/Foo/2026:00:00:00 +0000] "GET / HTTP/1.1" 200 5"#,
            r#"1.2.3.4 - - [01/Jan/2026:00:00:00 +0000] "GET / HTTP/1.1"#,
            r#"1.2.3.4 - - [01/Jan/2026:00:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "Mozil"#,
            r#"1.2.3.4 - - 01/Jan/2026:00:00:00 +0000 "GET / HTTP/1.1" 200 5"#,
            r#"1.2.3.4 - - [01/Jan/2026:00:00:00 +0000] "GET / HTTP/1.1" 200 12a"#,
        ] {
            assert!(parse(bad).is_none(), "accepted {bad:?}");
        }
    }

    #[test]
    fn cache_checks_seconds_and_zone() {
        let mut c = MinuteCache::default();
        let a = c.minute(b"01/Jan/2026:10:20:30 +0000").unwrap();
        assert_eq!(c.minute(b"01/Jan/2026:10:20:59 +0000"), Some(a));
        assert_eq!(c.minute(b"01/Jan/2026:10:20:59 +0100"), Some(a - 60));
        assert_eq!(c.minute(b"01/Jan/2026:10:20:5x +0100"), None);
    }

    #[test]
    fn civil_round_trip() {
        for z in [-800_000, -1, 0, 1, 59, 11_016, 20_454, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn request_time_forms() {
        assert_eq!(seconds_to_us(b"0.000"), Some(0));
        assert_eq!(seconds_to_us(b"1.5"), Some(1_500_000));
        assert_eq!(seconds_to_us(b"0.0000019"), Some(1));
        assert_eq!(seconds_to_us(b"-"), None);
        assert_eq!(seconds_to_us(b".5"), None);
    }
}
