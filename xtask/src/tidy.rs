//! House rules checked by an ordinary test: every Rust file opens with a `//!` line.

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable directory") {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !matches!(name, "target" | ".git" | ".switchyard-cache")
                    && !name.starts_with('.')
                {
                    rust_files(&path, out);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_rust_file_opens_with_a_module_doc_line() {
        let root = crate::root();
        let mut files = Vec::new();
        rust_files(&root, &mut files);
        assert!(
            files.len() > 10,
            "found only {} Rust files under {}",
            files.len(),
            root.display()
        );
        let missing: Vec<_> = files
            .iter()
            .filter(|f| {
                let text = std::fs::read_to_string(f).unwrap_or_default();
                !text.starts_with("//!")
            })
            .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
            .collect();
        assert!(
            missing.is_empty(),
            "files without a leading `//!` line: {missing:?}"
        );
    }
}
