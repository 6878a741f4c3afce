//! The language commands: `check`, `fmt`, `explain`, `stages`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use medgen_lang::check::Report;
use medgen_lang::diagnostic::Diagnostic;
use medgen_lang::signature::Registry;
use medgen_lang::source::SourceMap;
use medgen_lang::{errors, reference, Code};
use medgen_stdlib::StdRegistry;

use crate::Emit;

/// Runs `f` on every file (all of them, even after a failure) and says whether all passed.
pub fn every(files: &[PathBuf], mut f: impl FnMut(&Path) -> bool) -> bool {
    files.iter().map(|p| f(p)).filter(|ok| !ok).count() == 0
}

pub fn print_diagnostics(diags: &[Diagnostic], sources: &SourceMap, color: bool) {
    let mut err = std::io::stderr().lock();
    for d in diags {
        match d.span {
            Some(_) => {
                let _ = write!(err, "{}", d.render(sources, color));
            }
            None => {
                let _ = writeln!(err, "{}[{}]: {}", severity_word(d), d.code.id, d.message);
                if let Some(help) = &d.help {
                    let _ = writeln!(err, "  help: {help}");
                }
            }
        }
    }
}

fn severity_word(d: &Diagnostic) -> &'static str {
    if d.is_error() {
        "error"
    } else {
        "warning"
    }
}

/// Prints the report of one file and its one-line summary; returns whether it passes.
pub fn report(file: &Path, report: &Report, deny_warnings: bool, color: bool) -> bool {
    print_diagnostics(&report.diagnostics, &report.sources, color);
    let errors = report.diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = report.diagnostics.len() - errors;
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    match &report.pipeline {
        Some(p) if errors == 0 => {
            let mut line =
                format!("{}: ok, pipeline `{}` with {}", file.display(), p.name, plural(p.stages.len(), "declaration"));
            if warnings > 0 {
                line.push_str(&format!(", {}", plural(warnings, "warning")));
            }
            eprintln!("{line}");
        }
        _ => {
            eprintln!("{}: {}, {}", file.display(), plural(errors, "error"), plural(warnings, "warning"));
            if errors > 0 {
                eprintln!("  run `medgen explain CODE` for the why and the fix of each code");
            }
        }
    }
    errors == 0 && !(deny_warnings && warnings > 0)
}

pub fn check(
    file: &Path,
    overrides: &[String],
    deny_warnings: bool,
    emit: Option<Emit>,
    registry: &StdRegistry,
    color: bool,
) -> bool {
    let r = medgen_lang::check_file(file, overrides, registry);
    let ok = report(file, &r, deny_warnings, color);
    if let (Some(Emit::Json), Some(p)) = (emit, &r.pipeline) {
        match serde_json::to_string_pretty(p) {
            Ok(json) => outln!("{json}"),
            Err(e) => {
                eprintln!("error: cannot serialise the checked pipeline: {e}");
                return false;
            }
        }
    }
    ok
}

pub fn fmt(file: &Path, check_only: bool, color: bool) -> bool {
    let stdin = file == Path::new("-");
    let text = if stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map(|_| s)
    } else {
        std::fs::read_to_string(file)
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return false;
        }
    };
    let name = if stdin { "<stdin>".to_string() } else { file.display().to_string() };
    let formatted = match medgen_lang::format::format_source(&text) {
        Ok(f) => f,
        Err(diags) => {
            let mut sources = SourceMap::new();
            sources.add(name.clone(), None, text);
            print_diagnostics(&diags, &sources, color);
            eprintln!("{name}: not formatted, fix the syntax errors first");
            return false;
        }
    };
    if stdin {
        out!("{formatted}");
        return true;
    }
    if formatted == text {
        return true;
    }
    if check_only {
        eprintln!("{name}: not formatted (run `medgen fmt {name}`)");
        return false;
    }
    // Write beside the file and rename over it, so an interrupted write never truncates it.
    let tmp = file.with_extension("mg.fmt-tmp");
    let written = std::fs::write(&tmp, &formatted).and_then(|_| std::fs::rename(&tmp, file));
    match written {
        Ok(()) => {
            eprintln!("{name}: formatted");
            true
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            eprintln!("error: cannot write {name}: {e}");
            false
        }
    }
}

fn all_codes(registry: &StdRegistry) -> Vec<&'static Code> {
    errors::ALL.iter().copied().chain(registry.codes()).collect()
}

pub fn explain(code: Option<&str>, list: bool, all: bool, registry: &StdRegistry) -> bool {
    let codes = all_codes(registry);
    if all {
        out!("{}", reference::errors_markdown(&codes));
        return true;
    }
    if list {
        for c in &codes {
            outln!("{}  {}", c.id, c.title);
        }
        return true;
    }
    let wanted = code.unwrap_or_default().to_uppercase();
    match codes.iter().find(|c| c.id == wanted) {
        Some(c) => {
            outln!("{}", c.explanation.trim_end());
            true
        }
        None => {
            eprintln!("error: no diagnostic code `{wanted}`");
            eprintln!("  run `medgen explain --list` to see every code");
            false
        }
    }
}

pub fn stages(kind: Option<&str>, markdown: bool, registry: &StdRegistry) -> bool {
    let sigs: Vec<_> = registry.kinds().into_iter().map(|k| k.signature()).collect();
    let Some(kind) = kind else {
        if markdown {
            out!("{}", reference::stages_markdown(&sigs));
        } else {
            for s in &sigs {
                outln!("{:<10} {:<8} {}", s.kind, s.keyword.as_str(), s.doc);
            }
            outln!("\nrun `medgen stages KIND` for a kind's inputs and parameters");
        }
        return true;
    };
    match sigs.iter().find(|s| s.kind == kind) {
        Some(sig) => {
            out!("{}", reference::stage_markdown(sig));
            true
        }
        None => {
            eprintln!(
                "error: no stage kind `{kind}`; kinds are {}",
                sigs.iter().map(|s| s.kind).collect::<Vec<_>>().join(", ")
            );
            false
        }
    }
}
