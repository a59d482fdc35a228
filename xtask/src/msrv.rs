//! The `rust-version` check: the workspace's declared minimum Rust must be honest.
//!
//! Only one toolchain can be installed here, so the check cannot build with the minimum
//! itself. It checks what can be known without it: the toolchain in use is not older
//! than the declaration, no dependency declares a newer minimum than ours, and no source
//! file uses a language feature stabilised after it. Standard-library APIs newer than the
//! declaration are caught by clippy's `incompatible_msrv` lint, which reads the same
//! `rust-version` and runs in `cargo xtask ci`.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

/// A Rust version as `(major, minor)`.
type Version = (u32, u32);

/// Language features our sources might use, how to spot them, and the release that made
/// them stable. A feature is listed once it appears in the workspace.
const FEATURES: &[(&str, &str, Version)] = &[
    // `if let A = a && let B = b` (let chains, edition 2024).
    ("let chains", "&& let ", (1, 88)),
    // Edition 2024 itself.
    ("edition 2024", "edition = \"2024\"", (1, 85)),
];

fn parse(v: &str) -> Option<Version> {
    let mut it = v.trim().trim_matches('"').split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

fn show(v: Version) -> String {
    format!("{}.{}", v.0, v.1)
}

/// The `rust-version` of `[workspace.package]` in the root manifest.
fn declared(root: &Path) -> Result<Version> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).context("read Cargo.toml")?;
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("rust-version"))
        .context("Cargo.toml declares no rust-version")?;
    let value = line.split('=').nth(1).unwrap_or_default();
    parse(value).with_context(|| format!("unreadable rust-version line: {line}"))
}

/// Rust files and manifests under `dir`, leaving out this file (it names the markers).
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                sources(&path, out);
            }
        } else if (name.ends_with(".rs") && name != "msrv.rs") || name == "Cargo.toml" {
            out.push(path);
        }
    }
}

/// Fails when the workspace's `rust-version` is lower than what the code or its
/// dependencies need.
pub(crate) fn check(root: &Path) -> Result<()> {
    let ours = declared(root)?;
    let mut problems = Vec::new();

    let rustc = Command::new("rustc").arg("--version").output()?;
    let text = String::from_utf8_lossy(&rustc.stdout);
    if let Some(active) = text.split_whitespace().nth(1).and_then(parse)
        && active < ours
    {
        problems.push(format!(
            "the active toolchain is {} but the workspace declares {}",
            show(active),
            show(ours)
        ));
    }

    let mut files = Vec::new();
    sources(root, &mut files);
    for (feature, marker, since) in FEATURES {
        if *since <= ours {
            continue;
        }
        if let Some(f) = files.iter().find(|f| {
            std::fs::read_to_string(f)
                .map(|t| t.contains(marker))
                .unwrap_or(false)
        }) {
            problems.push(format!(
                "{} uses {feature}, stable since {}, but rust-version is {}",
                f.strip_prefix(root).unwrap_or(f).display(),
                show(*since),
                show(ours)
            ));
        }
    }

    let metadata = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .context("run cargo metadata")?;
    if !metadata.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&metadata.stderr)
        );
    }
    let json: serde_json::Value = serde_json::from_slice(&metadata.stdout)?;
    for pkg in json["packages"].as_array().into_iter().flatten() {
        let Some(needs) = pkg["rust_version"].as_str().and_then(parse) else {
            continue;
        };
        if needs > ours {
            problems.push(format!(
                "dependency {} {} needs Rust {}, newer than rust-version {}",
                pkg["name"].as_str().unwrap_or("?"),
                pkg["version"].as_str().unwrap_or("?"),
                show(needs),
                show(ours)
            ));
        }
    }

    if !problems.is_empty() {
        bail!("rust-version is not honest:\n  {}", problems.join("\n  "));
    }
    eprintln!("msrv: rust-version {} holds", show(ours));
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_parse_and_order() {
        assert_eq!(super::parse("1.88"), Some((1, 88)));
        assert_eq!(super::parse("\"1.85.0\""), Some((1, 85)));
        assert!(super::parse("1.9").unwrap() < super::parse("1.88").unwrap());
        assert_eq!(super::parse("x"), None);
    }
}
