//! The `medgen` command line. Everything it does is in the library crates; this file only
//! parses arguments, calls them, prints, and chooses the exit code.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use medgen_lang::check::Report;
use medgen_lang::diagnostic::Diagnostic;
use medgen_lang::signature::Registry;
use medgen_lang::source::SourceMap;
use medgen_lang::{errors, reference, Code};
use medgen_stdlib::StdRegistry;

/// Prints to standard output, ignoring a closed pipe (`medgen explain --all | head`).
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

macro_rules! outln {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Exit status: the pipeline (or a file given to `fmt --check`) has errors.
const EXIT_ERRORS: u8 = 1;

const AFTER_HELP: &str = "\
Exit status:
  0  success (warnings alone do not fail, unless --deny-warnings)
  1  the pipeline has errors, a file needs formatting (fmt --check), or nothing could run
  2  the command line itself is wrong

Examples:
  medgen check pipelines/quickstart.mg
  medgen check pipelines/*.mg --deny-warnings
  medgen check pipelines/quickstart.mg --set ldm.epochs=5 --set seed=3
  medgen fmt pipelines/quickstart.mg
  medgen explain E0112
  medgen stages diffuse";

/// medgen: declarative, cached medical-image generation experiments.
#[derive(Parser)]
#[command(name = "medgen", version, about, after_help = AFTER_HELP, arg_required_else_help = true)]
struct Cli {
    /// When to color output.
    #[arg(long, value_enum, default_value_t = Color::Auto, global = true)]
    color: Color,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and type-check pipelines; report every error with its place and a hint.
    #[command(
        after_help = "Examples:\n  medgen check pipelines/*.mg\n  medgen check run.mg --set ldm.lr=5e-5 --emit json"
    )]
    Check {
        /// Pipeline files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Override a parameter: STAGE.PARAM=VALUE or CONSTANT=VALUE (repeatable).
        #[arg(long = "set", value_name = "TARGET=VALUE")]
        overrides: Vec<String>,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
        /// Also print the checked pipeline (every default filled, every channel derived).
        #[arg(long, value_enum)]
        emit: Option<Emit>,
    },
    /// Check a pipeline and run it.
    #[command(after_help = "Example:\n  medgen run pipelines/quickstart.mg --set ldm.epochs=5")]
    Run {
        /// The pipeline file.
        file: PathBuf,
        /// Override a parameter: STAGE.PARAM=VALUE or CONSTANT=VALUE (repeatable).
        #[arg(long = "set", value_name = "TARGET=VALUE")]
        overrides: Vec<String>,
    },
    /// Rewrite pipelines in the canonical layout (comments are kept).
    #[command(
        after_help = "Examples:\n  medgen fmt pipelines/*.mg\n  medgen fmt --check pipelines/*.mg\n  medgen fmt - < draft.mg"
    )]
    Fmt {
        /// Pipeline files; `-` reads standard input and writes standard output.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Change nothing; exit 1 if a file is not formatted.
        #[arg(long)]
        check: bool,
    },
    /// Explain a diagnostic code, with an example and the fix.
    #[command(after_help = "Examples:\n  medgen explain E0112\n  medgen explain --list")]
    Explain {
        /// The code, e.g. E0112.
        #[arg(required_unless_present_any = ["list", "all"])]
        code: Option<String>,
        /// List every code with its title.
        #[arg(long, conflicts_with = "all")]
        list: bool,
        /// Print every explanation as one Markdown document (docs/errors.md).
        #[arg(long)]
        all: bool,
    },
    /// Describe stage kinds: inputs, parameters, types, defaults.
    #[command(
        after_help = "Examples:\n  medgen stages\n  medgen stages diffuse\n  medgen stages --markdown > docs/stages.md"
    )]
    Stages {
        /// One kind; all when omitted.
        kind: Option<String>,
        /// Print Markdown (docs/stages.md).
        #[arg(long)]
        markdown: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = match cli.color {
        Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        Color::Always => true,
        Color::Never => false,
    };
    let registry = StdRegistry::new();
    let ok = match cli.command {
        Command::Check { files, overrides, deny_warnings, emit } => {
            every(&files, |f| check(f, &overrides, deny_warnings, emit, &registry, color))
        }
        Command::Run { file, overrides } => run(&file, &overrides, &registry, color),
        Command::Fmt { files, check } => every(&files, |f| fmt(f, check, color)),
        Command::Explain { code, list, all } => explain(code.as_deref(), list, all, &registry),
        Command::Stages { kind, markdown } => stages(kind.as_deref(), markdown, &registry),
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_ERRORS)
    }
}

/// Runs `f` on every file (all of them, even after a failure) and says whether all passed.
fn every(files: &[PathBuf], mut f: impl FnMut(&Path) -> bool) -> bool {
    files.iter().map(|p| f(p)).filter(|ok| !ok).count() == 0
}

fn print_diagnostics(diags: &[Diagnostic], sources: &SourceMap, color: bool) {
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
fn report(file: &Path, report: &Report, deny_warnings: bool, color: bool) -> bool {
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

fn check(
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

fn run(file: &Path, overrides: &[String], registry: &StdRegistry, color: bool) -> bool {
    let r = medgen_lang::check_file(file, overrides, registry);
    if !report(file, &r, false, color) {
        return false;
    }
    let Some(p) = r.pipeline else { return false };
    eprintln!("\nstages of `{}`, in the order they would run:", p.name);
    for s in &p.stages {
        let instances = s.instances.len();
        let sweep = if instances > 1 { format!(" ({instances} sweep instances)") } else { String::new() };
        eprintln!("  {:<16} {}{sweep}", s.name, s.kind);
    }
    eprintln!(
        "\nerror: medgen cannot execute stages yet: the engine (cache, store, executors) is the next milestone.\n\
         The pipeline is valid; `medgen check` and `medgen fmt` work today."
    );
    false
}

fn fmt(file: &Path, check_only: bool, color: bool) -> bool {
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

fn explain(code: Option<&str>, list: bool, all: bool, registry: &StdRegistry) -> bool {
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

fn stages(kind: Option<&str>, markdown: bool, registry: &StdRegistry) -> bool {
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
