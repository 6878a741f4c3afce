//! End-to-end tests of the `medgen` binary: what a user sees, and the exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn medgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medgen")).args(args).output().expect("medgen runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn examples() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir("pipelines")
        .expect("pipelines/ exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "mg"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    files
}

/// Writes `text` to a fresh file in a temporary directory and returns its path.
fn temp_pipeline(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("medgen-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{name}.mg"));
    std::fs::write(&path, text).expect("write pipeline");
    path
}

/// Copies the directory tree `from` to `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("readable directory") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// The paths E0031 reports missing, with whether each is a directory.
fn missing_paths(report: &medgen_lang::check::Report) -> Vec<(String, bool)> {
    report
        .diagnostics
        .iter()
        .filter(|d| d.code.id == "E0031")
        .filter_map(|d| {
            let (_, rest) = d.message.split_once("names the ")?;
            let is_dir = rest.starts_with("directory");
            let path = rest.split('"').nth(1)?.to_string();
            Some((path, is_dir))
        })
        .collect()
}

#[test]
fn every_example_checks_clean_without_warnings_given_its_files() {
    // Examples for a cluster name the user's data and weights, which are not in the repository:
    // checked where they are, their only errors are those files (E0031); in a copy where each
    // exists (empty: the checker looks at their existence), they check clean.
    let copy = std::env::temp_dir().join(format!("medgen-cli-{}-examples", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    copy_tree(Path::new("pipelines"), &copy);
    let registry = medgen_stdlib::StdRegistry::new();
    for example in examples() {
        let copied = copy.join(Path::new(&example).strip_prefix("pipelines").expect("under pipelines/"));
        // A stage with a missing file is not checked further, so its dependents' files show up
        // once it has them: add stand-ins until nothing is missing.
        for _ in 0..8 {
            let report = medgen_lang::check::check_file(&copied, &[], &registry);
            let others: Vec<&str> =
                report.diagnostics.iter().filter(|d| d.code.id != "E0031").map(|d| d.message.as_str()).collect();
            assert!(others.is_empty(), "{example}: {others:?}");
            let missing = missing_paths(&report);
            if missing.is_empty() {
                break;
            }
            let base = copied.parent().expect("the copy's directory");
            for (path, is_dir) in missing {
                let stand_in = base.join(path);
                if is_dir {
                    std::fs::create_dir_all(&stand_in).expect("stand-in directory");
                } else {
                    std::fs::create_dir_all(stand_in.parent().expect("parent")).expect("stand-in parent");
                    std::fs::write(&stand_in, b"").expect("stand-in file");
                }
            }
        }
    }
    let files: Vec<String> = examples()
        .iter()
        .map(|f| copy.join(Path::new(f).strip_prefix("pipelines").expect("under pipelines/")).display().to_string())
        .collect();
    assert!(files.len() >= 4, "expected the example pipelines, found {files:?}");
    let mut args = vec!["check", "--deny-warnings"];
    args.extend(files.iter().map(String::as_str));
    let o = medgen(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in &files {
        assert!(stderr(&o).contains(&format!("{f}: ok")), "{}", stderr(&o));
    }
    std::fs::remove_dir_all(&copy).expect("remove the copy");
}

#[test]
fn the_readme_pipeline_is_the_quickstart() {
    let readme = std::fs::read_to_string("README.md").expect("README.md");
    let (_, after) = readme.split_once("## A pipeline").expect("README has `## A pipeline`");
    let (_, block) = after.split_once("```medgen\n").expect("a medgen block under it");
    let (block, _) = block.split_once("```").expect("the block ends");
    let quickstart = std::fs::read_to_string("pipelines/quickstart.mg").expect("quickstart.mg");
    assert!(block == quickstart, "README's `A pipeline` block differs from pipelines/quickstart.mg: copy the file");
}

#[test]
fn every_example_is_formatted() {
    let mut args = vec!["fmt", "--check"];
    let files = examples();
    args.extend(files.iter().map(String::as_str));
    let o = medgen(&args);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn an_error_names_file_line_column_with_a_caret_and_a_hint() {
    let path = temp_pipeline(
        "typo",
        "pipeline typo\n\ndataset brain = phantom {\n  volumes = 8\n}\n\nstage vae = compress(brain) {\n  model = vqvae(dims: 2)\n  epochz = 3\n}\n",
    );
    let o = medgen(&["check", "--color", "never", path.to_str().expect("utf-8 path")]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("E0020"), "{err}");
    assert!(err.contains("`compress` has no parameter `epochz`; did you mean `epochs`?"), "{err}");
    assert!(err.contains("typo.mg:9:3]"), "{err}");
    assert!(err.contains("   epochz = 3\n"), "{err}");
    assert!(err.contains("──────"), "underline missing: {err}");
    assert!(err.contains("1 error, 0 warnings"), "{err}");
}

#[test]
fn warnings_pass_unless_denied() {
    let path = temp_pipeline("warn", "pipeline warn\nunused = 3\ndataset brain = phantom { volumes = 8 }\n");
    let p = path.to_str().expect("utf-8 path");
    let o = medgen(&["check", p]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("W0001"), "{}", stderr(&o));
    assert_eq!(medgen(&["check", "--deny-warnings", p]).status.code(), Some(1));
}

#[test]
fn overrides_are_typed_and_validated() {
    let ok = medgen(&["check", "pipelines/quickstart.mg", "--set", "ldm.epochs=5", "--set", "seed=3"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let json = medgen(&["check", "pipelines/quickstart.mg", "--set", "ldm.epochs=5", "--emit", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json on stdout");
    let ldm = v["stages"].as_array().expect("stages").iter().find(|s| s["name"] == "ldm").expect("ldm stage");
    assert_eq!(ldm["instances"][0]["params"]["epochs"]["value"]["int"], 5);
    assert_eq!(ldm["instances"][0]["params"]["epochs"]["origin"], "override");

    let out_of_range = medgen(&["check", "pipelines/quickstart.mg", "--set", "ldm.epochs=0"]);
    assert_eq!(out_of_range.status.code(), Some(1));
    assert!(stderr(&out_of_range).contains("E0023"), "{}", stderr(&out_of_range));
    assert!(stderr(&out_of_range).contains("[--set:1:12]"), "{}", stderr(&out_of_range));

    let unknown = medgen(&["check", "pipelines/quickstart.mg", "--set", "ldn.epochs=5"]);
    assert!(stderr(&unknown).contains("did you mean `ldm`?"), "{}", stderr(&unknown));
    let malformed = medgen(&["check", "pipelines/quickstart.mg", "--set", "ldm.epochs"]);
    assert!(stderr(&malformed).contains("E0028"), "{}", stderr(&malformed));
}

#[test]
fn a_missing_file_is_reported_by_name() {
    let o = medgen(&["check", "no/such/pipeline.mg"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot read `no/such/pipeline.mg`"), "{}", stderr(&o));
}

#[test]
fn fmt_check_reports_and_fmt_rewrites() {
    let path = temp_pipeline("fmt", "pipeline fmt\ndataset brain=phantom{volumes=8 # few\nshape=[8,16,16]}\n");
    let p = path.to_str().expect("utf-8 path");
    let check = medgen(&["fmt", "--check", p]);
    assert_eq!(check.status.code(), Some(1));
    assert!(stderr(&check).contains("not formatted"), "{}", stderr(&check));
    assert_eq!(
        std::fs::read_to_string(&path).expect("unchanged"),
        "pipeline fmt\ndataset brain=phantom{volumes=8 # few\nshape=[8,16,16]}\n"
    );
    assert!(medgen(&["fmt", p]).status.success());
    let formatted = std::fs::read_to_string(&path).expect("formatted");
    assert_eq!(
        formatted,
        "pipeline fmt\n\ndataset brain = phantom {\n  volumes = 8  # few\n  shape   = [8, 16, 16]\n}\n"
    );
    assert!(medgen(&["fmt", "--check", p]).status.success());
}

#[test]
fn fmt_refuses_a_file_with_syntax_errors() {
    let path = temp_pipeline("broken", "pipeline broken\ndataset brain = phantom { volumes = }\n");
    let o = medgen(&["fmt", path.to_str().expect("utf-8 path")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("expected a value, found `}`"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&path).expect("unchanged"),
        "pipeline broken\ndataset brain = phantom { volumes = }\n"
    );
}

#[test]
fn explain_prints_the_explanation_and_rejects_unknown_codes() {
    let o = medgen(&["explain", "e0112"]);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("# E0112: min-SNR loss weighting with rectified flow"), "{}", stdout(&o));
    let unknown = medgen(&["explain", "E9999"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("medgen explain --list"));
}

#[test]
fn generated_docs_are_current() {
    for (args, file) in
        [(&["explain", "--all"][..], "docs/errors.md"), (&["stages", "--markdown"][..], "docs/stages.md")]
    {
        let o = medgen(args);
        assert!(o.status.success());
        let committed = std::fs::read_to_string(Path::new(file)).unwrap_or_default();
        assert!(
            committed == stdout(&o),
            "{file} is stale: regenerate it with `cargo run -- {} > {file}`",
            args.join(" ")
        );
    }
}

#[test]
fn run_checks_first_then_runs_and_gates_on_expect() {
    // A compressor's reconstructions scored against the test split, and an expectation no
    // one-epoch compressor meets: every stage runs, the expectation fails the run.
    let path = temp_pipeline(
        "expect-fails",
        "pipeline expect_fails\n\
         dataset brain = phantom { volumes = 8  shape = [8, 16, 16]  modalities = [t1_pre, seg] }\n\
         stage vae = compress(brain) {\n\
           model = vae(dims: 2, channels: [8], latent_channels: 2, res_blocks: 1)\n\
           perceptual_weight = 0  epochs = 1  batch = 8\n\
         }\n\
         stage scores = evaluate(vae, reference: brain.test) {\n\
           metrics = [psnr, ssim]\n\
           expect psnr > 99\n\
         }\n",
    );
    let p = path.to_str().expect("utf-8 path");
    let store = std::env::temp_dir().join(format!("medgen-cli-store-{}", std::process::id()));
    let o = medgen(&["run", p, "--store", store.to_str().expect("utf-8 path")]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    for stage in ["brain", "vae", "scores"] {
        assert!(err.contains(&format!("ran      {stage}")), "{stage} runs: {err}");
    }
    assert!(err.contains("psnr > 99"), "the failed expectation is named: {err}");
    let bad = medgen(&["run", "pipelines/quickstart.mg", "--set", "ldm.mode=rflow"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("E0101"), "{}", stderr(&bad));
    let _ = std::fs::remove_dir_all(store);
}
