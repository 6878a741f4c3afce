//! `medgen fmt` changes layout only: for every example and every clean fixture, the formatted
//! text checks to exactly the same resolved pipeline as the original, and formatting it again
//! changes nothing.

use std::path::{Path, PathBuf};

use medgen_lang::check::check_text_at;
use medgen_lang::format::format_source;
use medgen_stdlib::StdRegistry;

fn pipelines() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["pipelines", "tests/fixtures/lang/ok"] {
        for entry in std::fs::read_dir(dir).expect("directory exists") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "mg") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The checked pipeline as JSON, the form that later phases consume; for an example that names
/// files of the user's (refused while they are missing, E0031), its diagnostics' codes and
/// messages, which formatting must not change either.
fn resolved(path: &Path, text: &str) -> String {
    let report = check_text_at(path, text, &[], &StdRegistry::new());
    match report.pipeline {
        Some(pipeline) => serde_json::to_string(&pipeline).expect("serialisable"),
        None => {
            let codes: Vec<String> =
                report.diagnostics.iter().map(|d| format!("{}: {}", d.code.id, d.message)).collect();
            assert!(codes.iter().all(|c| c.starts_with("E0031")), "{} does not check clean: {codes:?}", path.display());
            codes.join("\n")
        }
    }
}

#[test]
fn formatted_pipelines_check_identically() {
    let files = pipelines();
    assert!(files.len() >= 5, "found only {files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable");
        let formatted = format_source(&text).unwrap_or_else(|_| panic!("{} does not format", path.display()));
        assert_eq!(
            format_source(&formatted).ok().as_deref(),
            Some(formatted.as_str()),
            "{} not idempotent",
            path.display()
        );
        let (before, after) = (resolved(&path, &text), resolved(&path, &formatted));
        assert_eq!(before, after, "{} checks differently once formatted", path.display());
    }
}
