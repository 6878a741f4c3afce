//! The `medgen` command line. Everything it does is in the library crates; these files only
//! parse arguments, call them, print, and choose the exit code.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
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

mod engine_cmds;
mod gc;
mod lang_cmds;
mod progress;

/// Exit statuses, as `--help` documents them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// The pipeline has errors (or a file needs formatting, or a store problem).
    Errors = 1,
    /// A stage failed (or was skipped because one upstream did).
    StageFailed = 3,
    /// Every stage succeeded but an `expect` line did not hold.
    ExpectFailed = 4,
    /// Interrupted (Ctrl-C); nothing half-written was recorded.
    Interrupted = 130,
}

impl From<bool> for Exit {
    fn from(ok: bool) -> Exit {
        if ok {
            Exit::Ok
        } else {
            Exit::Errors
        }
    }
}

const AFTER_HELP: &str = "\
Exit status:
  0    success (warnings alone do not fail, unless --deny-warnings)
  1    the pipeline has errors, a file needs formatting (fmt --check), or the store is unusable
  2    the command line itself is wrong
  3    a stage failed (run)
  4    every stage ran but an `expect` line failed (run)
  130  interrupted; nothing half-written was recorded (run)

Examples:
  medgen check pipelines/*.mg
  medgen plan pipelines/quickstart.mg --set ldm.epochs=5
  medgen run pipelines/quickstart.mg -j 2
  medgen show ldm --pipeline pipelines/quickstart.mg
  medgen explain E0112";

/// medgen: declarative, cached medical-image generation experiments.
#[derive(Parser)]
#[command(name = "medgen", version, about, after_help = AFTER_HELP, arg_required_else_help = true)]
struct Cli {
    /// When to color output.
    #[arg(long, value_enum, default_value_t = Color::Auto, global = true)]
    color: Color,
    /// More logging on stderr: -v for what runs and why, -vv for debugging.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

/// Where the store is: `--store DIR`, else `$MEDGEN_STORE`, else `.medgen/` beside the pipeline
/// (`engine_cmds::store_root` is the rule).
#[derive(clap::Args, Clone)]
pub struct StoreArg {
    /// The store directory [default: $MEDGEN_STORE, or .medgen beside the pipeline file, or
    /// .medgen here when no pipeline is named].
    #[arg(long, env = "MEDGEN_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
}

/// Options shared by the commands that evaluate a pipeline.
#[derive(clap::Args, Clone)]
pub struct PipelineArgs {
    /// The pipeline file.
    pub file: PathBuf,
    /// Override a parameter: STAGE.PARAM=VALUE or CONSTANT=VALUE (repeatable).
    #[arg(long = "set", value_name = "TARGET=VALUE")]
    pub overrides: Vec<String>,
    #[command(flatten)]
    pub store: StoreArg,
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
    /// Check a pipeline and run what is not up to date; then evaluate its `expect` lines.
    #[command(
        after_help = "Examples:\n  medgen run pipelines/quickstart.mg\n  medgen run p.mg -j 4 --keep-going --set ldm.epochs=5\n  medgen run p.mg --verify"
    )]
    Run {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Stages running at once [default: the number of CPUs].
        #[arg(short, long, value_name = "N")]
        jobs: Option<usize>,
        /// After a stage fails, keep running stages that do not depend on it.
        #[arg(short, long)]
        keep_going: bool,
        /// Re-hash input files and stored outputs instead of trusting sizes and timestamps;
        /// a corrupt stored output is reported and recomputed.
        #[arg(long)]
        verify: bool,
    },
    /// Show what `run` would do and why, without running anything.
    #[command(after_help = "Example:\n  medgen plan pipelines/quickstart.mg --set ldm.lr=1e-4")]
    Plan {
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Show each stage instance's state and its last successful run.
    Status {
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Print the stage-instance DAG as Graphviz DOT or Mermaid.
    #[command(after_help = "Example:\n  medgen graph p.mg | dot -Tsvg > p.svg")]
    Graph {
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Show a stage's stored outputs, metrics and parameters.
    #[command(
        after_help = "Examples:\n  medgen show ldm --pipeline pipelines/quickstart.mg\n  medgen show ldm   (in the pipeline's directory)"
    )]
    Show {
        /// The stage (all its instances) or one instance (`ldm[lr=1e-4]`).
        stage: String,
        /// The pipeline; its store is beside it [default: the pipeline of the last `medgen run`
        /// with the store of the current directory, or --store].
        #[arg(long, value_name = "FILE")]
        pipeline: Option<PathBuf>,
        /// Override a parameter, as for `run`.
        #[arg(long = "set", value_name = "TARGET=VALUE")]
        overrides: Vec<String>,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Remove stored outputs that the pipelines named, or those of the store's recorded runs, do
    /// not use.
    #[command(
        after_help = "What is kept: what each pipeline's instances use now (as `plan` sees them); for a recorded \
                      pipeline that no longer exists or checks, every output its runs made.\n\nExamples:\n  \
                      medgen gc pipelines/quickstart.mg --dry-run\n  medgen gc --store pipelines/.medgen\n  \
                      medgen gc --all --store pipelines/.medgen"
    )]
    Gc {
        /// The pipelines whose outputs to keep; their store is beside them [default: the
        /// pipelines named in the store's run records].
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Remove every stored output, used or not.
        #[arg(long, conflicts_with = "files")]
        all: bool,
        /// Say what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        store: StoreArg,
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
pub enum Emit {
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

fn main() -> ExitCode {
    medgen_stdlib::allocator::keep_freed_memory();
    let cli = Cli::parse();
    let color = match cli.color {
        Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        Color::Always => true,
        Color::Never => false,
    };
    init_tracing(cli.verbose, color);
    let registry = StdRegistry::new();
    let exit = match cli.command {
        Command::Check { files, overrides, deny_warnings, emit } => {
            lang_cmds::every(&files, |f| lang_cmds::check(f, &overrides, deny_warnings, emit, &registry, color)).into()
        }
        Command::Run { pipeline, jobs, keep_going, verify } => {
            let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            engine_cmds::run(&pipeline, jobs, keep_going, verify, cli.verbose, &registry, color)
        }
        Command::Plan { pipeline } => engine_cmds::plan(&pipeline, false, &registry, color),
        Command::Status { pipeline } => engine_cmds::plan(&pipeline, true, &registry, color),
        Command::Graph { pipeline, format } => engine_cmds::graph(&pipeline, format, &registry, color),
        Command::Show { stage, pipeline, overrides, store } => {
            engine_cmds::show(&stage, pipeline, &overrides, &store, &registry, color)
        }
        Command::Gc { files, all, dry_run, store } => gc::gc(&files, all, dry_run, &store, &registry),
        Command::Fmt { files, check } => lang_cmds::every(&files, |f| lang_cmds::fmt(f, check, color)).into(),
        Command::Explain { code, list, all } => lang_cmds::explain(code.as_deref(), list, all, &registry).into(),
        Command::Stages { kind, markdown } => lang_cmds::stages(kind.as_deref(), markdown, &registry).into(),
    };
    ExitCode::from(exit as u8)
}

/// Logs to stderr: warnings by default, more with -v and -vv; `RUST_LOG` overrides.
fn init_tracing(verbose: u8, color: bool) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("medgen={level},medgen_engine={level},medgen_stdlib={level}"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(color)
        .init();
}
