//! A deterministic generator of realistic access logs (combined format plus a trailing
//! request time in seconds, as nginx writes `$request_time`).
//!
//! Clients and paths are drawn from fixed universes with Zipf-like skew, statuses and
//! methods from a realistic mix, time stamps move forward with a daily rhythm, request
//! times follow a log-normal law (slower for server errors). About 0.1% of lines are
//! damaged in several ways and a few lines are very long (64 KiB to 1 MiB). The same seed
//! and size always give the same bytes.

use super::parse::{civil_from_days, days_from_civil};
use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp1, LogNormal, Zipf};
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// What the generator wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct GenStats {
    /// Lines written.
    pub(crate) lines: u64,
    /// Lines deliberately damaged.
    pub(crate) malformed: u64,
    /// Lines of 64 KiB or more.
    pub(crate) long_lines: u64,
    /// Bytes written.
    pub(crate) bytes: u64,
}

const WORDS: &[&str] = &[
    "alpha", "river", "stone", "cloud", "maple", "orbit", "pixel", "delta", "ember", "forge",
    "grove", "harbor", "iris", "jade", "kite", "lumen", "meadow", "nova", "oasis", "prism",
    "quartz", "ridge", "summit", "tide", "umbra", "vale", "willow", "zenith", "copper", "lotus",
];

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; ExampleBot/2.1; +https://bot.example/)",
    "curl/8.8.0",
    "python-requests/2.32.3",
    "Go-http-client/2.0",
    "Prometheus/2.53.0",
];

/// Cumulative weights (per mille) and values.
const METHOD_MIX: &[(u32, &str)] = &[
    (850, "GET"),
    (940, "POST"),
    (960, "HEAD"),
    (980, "PUT"),
    (990, "DELETE"),
    (997, "OPTIONS"),
    (1000, "PATCH"),
];
const STATUS_MIX: &[(u32, u16)] = &[
    (780, 200),
    (795, 201),
    (805, 204),
    (825, 301),
    (845, 302),
    (905, 304),
    (910, 400),
    (915, 401),
    (922, 403),
    (972, 404),
    (975, 429),
    (988, 500),
    (993, 502),
    (998, 503),
    (1000, 504),
];

fn pick<T: Copy>(rng: &mut ChaCha8Rng, mix: &[(u32, T)]) -> T {
    let r = rng.random_range(0..1000);
    mix.iter()
        .find(|(c, _)| r < *c)
        .map_or(mix[mix.len() - 1].1, |(_, v)| *v)
}

fn word(rng: &mut ChaCha8Rng) -> &'static str {
    WORDS[rng.random_range(0..WORDS.len())]
}

fn make_ips(rng: &mut ChaCha8Rng, n: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let a = rng.random_range(1..224u32);
        if a == 10 || a == 127 {
            continue;
        }
        let ip = format!(
            "{a}.{}.{}.{}",
            rng.random_range(0..256u32),
            rng.random_range(0..256u32),
            rng.random_range(1..255u32)
        );
        if seen.insert(ip.clone()) {
            out.push(ip);
        }
    }
    out
}

fn make_paths(rng: &mut ChaCha8Rng, n: usize) -> Vec<String> {
    let fixed = [
        "/",
        "/index.html",
        "/api/v1/health",
        "/favicon.ico",
        "/login",
        "/search",
        "/cart",
        "/robots.txt",
        "/checkout",
        "/about",
        "/contact",
        "/sitemap.xml",
        "/logout",
    ];
    let mut seen: HashSet<String> = fixed.iter().map(|s| s.to_string()).collect();
    let mut out: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
    while out.len() < n {
        let p = match rng.random_range(0..9) {
            0 => format!("/static/css/site.{:08x}.css", rng.random::<u32>()),
            1 => format!("/static/js/app.{:08x}.js", rng.random::<u32>()),
            2 => format!("/images/{}-{}.jpg", word(rng), rng.random_range(1..500)),
            3 => format!("/products/{}", rng.random_range(1..100_000)),
            4 => format!("/api/v1/users/{}", rng.random_range(1..1_000_000)),
            5 => format!("/api/v1/orders/{}", rng.random_range(1..1_000_000)),
            6 => format!(
                "/blog/{}/{}-{}",
                rng.random_range(2015..2027),
                word(rng),
                word(rng)
            ),
            7 => format!("/docs/{}/{}.html", word(rng), word(rng)),
            _ => format!("/{}/{}", word(rng), word(rng)),
        };
        if seen.insert(p.clone()) {
            out.push(p);
        }
    }
    out
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Formats seconds since the epoch as `dd/Mon/yyyy:HH:MM:SS +0000`.
fn format_ts(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{d:02}/{}/{y:04}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Writes about `size` bytes of log (the last line is finished) to `out`.
pub(crate) fn generate<W: Write>(out: W, size: u64, seed: u64) -> std::io::Result<GenStats> {
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ips = make_ips(&mut rng, 30_000);
    let paths = make_paths(&mut rng, 8_000);
    let ip_dist = Zipf::new(ips.len() as f64, 1.05).expect("valid Zipf parameters");
    let path_dist = Zipf::new(paths.len() as f64, 1.2).expect("valid Zipf parameters");
    let ua_dist = Zipf::new(USER_AGENTS.len() as f64, 1.0).expect("valid Zipf parameters");
    let body = LogNormal::new(8.5, 1.2).expect("valid log-normal parameters");
    let latency_ms = LogNormal::new(3.2, 1.0).expect("valid log-normal parameters");

    let start_secs = days_from_civil(2026, 3, 2) * 86_400;
    let mut t_us: u64 = 0;
    let mut ts_secs = i64::MIN;
    let mut ts = String::new();
    let mut line: Vec<u8> = Vec::with_capacity(1024);
    let mut stats = GenStats::default();
    while stats.bytes < size {
        // Forward-moving time: exponential gaps, busier by day than by night.
        let day_phase = (t_us as f64 / 86_400e6) * std::f64::consts::TAU;
        let rate = 1.0 + 0.6 * (day_phase - std::f64::consts::FRAC_PI_2).sin();
        let gap: f64 = rng.sample(Exp1);
        t_us += (gap * 12_000.0 / rate) as u64;
        let secs = start_secs + (t_us / 1_000_000) as i64;
        if secs != ts_secs {
            ts_secs = secs;
            ts = format_ts(secs);
        }

        let ip = &ips[ip_dist.sample(&mut rng) as usize - 1];
        let method = pick(&mut rng, METHOD_MIX);
        let path = &paths[path_dist.sample(&mut rng) as usize - 1];
        let status = pick(&mut rng, STATUS_MIX);
        let proto = if rng.random_range(0..10) == 0 {
            "HTTP/2.0"
        } else {
            "HTTP/1.1"
        };
        let long = rng.random_range(0..300_000) == 0;
        let broken = !long && rng.random_range(0..1000) == 0;

        line.clear();
        write!(line, "{ip} - - [")?;
        let bracket = line.len() - 1;
        write!(line, "{ts}] \"{method} {path}")?;
        if long && rng.random::<bool>() {
            let n = rng.random_range(64 << 10..1 << 20);
            line.extend_from_slice(b"?q=");
            line.extend((0..n).map(|_| b'a' + rng.random_range(0..26u8)));
        } else if rng.random_range(0..20) == 0 {
            write!(line, "?page={}", rng.random_range(1..20))?;
        }
        write!(line, " {proto}\" ")?;
        let status_at = line.len();
        write!(line, "{status} ")?;
        match status {
            204 | 304 => line.push(b'-'),
            404 => write!(line, "{}", rng.random_range(150..600))?,
            _ => write!(line, "{}", (body.sample(&mut rng) as u64).min(50_000_000))?,
        }
        if rng.random_range(0..10) < 4 {
            line.extend_from_slice(b" \"-\" \"");
        } else {
            write!(
                line,
                " \"https://shop.example{}\" \"",
                paths[rng.random_range(0..50)]
            )?;
        }
        line.extend_from_slice(USER_AGENTS[ua_dist.sample(&mut rng) as usize - 1].as_bytes());
        if long && line.len() < 64 << 10 {
            let n = rng.random_range(64 << 10..1 << 20);
            line.extend_from_slice(b" extra/");
            line.extend((0..n).map(|_| b'a' + rng.random_range(0..26u8)));
        }
        let mut ms = latency_ms.sample(&mut rng);
        if status >= 500 {
            ms *= 5.0;
        }
        let ms = (ms as u64).min(600_000);
        write!(line, "\" {}.{:03}", ms / 1000, ms % 1000)?;

        if broken {
            match rng.random_range(0..5) {
                0 => line.truncate(rng.random_range(8..status_at - 1)),
                1 => line[status_at + 1] = b'x',
                2 => line[bracket] = b'(',
                3 => line.clear(),
                _ => {
                    let n = rng.random_range(20..120);
                    line.clear();
                    line.extend((0..n).map(|_| match rng.random_range(0..8u8) {
                        0 => b' ',
                        c => b'a' + c * 3,
                    }));
                }
            }
            stats.malformed += 1;
        }
        if line.len() >= 64 << 10 {
            stats.long_lines += 1;
        }
        line.push(b'\n');
        out.write_all(&line)?;
        stats.lines += 1;
        stats.bytes += line.len() as u64;
    }
    out.flush()?;
    Ok(stats)
}

/// Writes a generated log to `path` (through a temporary file renamed at the end, so an
/// interrupted run never leaves a partial file under the final name).
pub(crate) fn generate_file(path: &Path, size: u64, seed: u64) -> Result<GenStats> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("partial");
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let stats = generate(file, size, seed).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let run = |seed| {
            let mut v = Vec::new();
            generate(&mut v, 200_000, seed).unwrap();
            v
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        assert!(a.len() >= 200_000 && a.ends_with(b"\n"));
    }

    #[test]
    fn time_stamps_format() {
        assert_eq!(
            format_ts(days_from_civil(2026, 3, 2) * 86_400 + 3661),
            "02/Mar/2026:01:01:01 +0000"
        );
    }
}
