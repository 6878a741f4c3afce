//! End-to-end tests of the engine through the `medgen` binary, with `shell` stages: what
//! reruns after each kind of change and why, crash safety (kill -9, Ctrl-C), two runs on one
//! store, corrupted outputs, failures, `expect`, `gc`, and the reporting commands.
//!
//! Every test builds its own project in a fresh temporary directory with its store inside it,
//! and every shell command first appends its instance name (`$MEDGEN_STAGE`) to `ran.log`
//! there, so a test knows exactly which commands ran.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// A generous bound for anything a test waits for.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A project in a temporary directory: `p.mg`, its data, `store/` and `ran.log`.
struct Project {
    dir: PathBuf,
    store: PathBuf,
    log: PathBuf,
    /// Lines of the log that `ran` has already returned.
    seen: Cell<usize>,
}

impl Project {
    fn new(name: &str) -> Project {
        let dir = std::env::temp_dir().join(format!("medgen-engine-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the temp dir");
        let dir = dir.canonicalize().expect("canonical temp dir");
        Project { store: dir.join("store"), log: dir.join("ran.log"), dir, seen: Cell::new(0) }
    }

    /// Replaces `@LOG` by the command that logs the instance name and `@DIR` by the project
    /// directory.
    fn expand(&self, text: &str) -> String {
        let log = format!("echo \\\"$MEDGEN_STAGE\\\" >> {}", self.log.display());
        text.replace("@LOG", &log).replace("@DIR", &self.dir.display().to_string())
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().expect("a parent")).expect("create parent dirs");
        fs::write(path, text).expect("write a project file");
    }

    /// Writes the pipeline `p.mg`.
    fn pipeline(&self, text: &str) {
        self.write("p.mg", &self.expand(text));
    }

    /// Replaces the one occurrence of `from` in `p.mg` by `to`.
    fn edit(&self, from: &str, to: &str) {
        let (from, to) = (self.expand(from), self.expand(to));
        let text = fs::read_to_string(self.path("p.mg")).expect("read p.mg");
        assert_eq!(text.matches(&from).count(), 1, "`{from}` should occur once in:\n{text}");
        fs::write(self.path("p.mg"), text.replace(&from, &to)).expect("write p.mg");
    }

    /// `medgen ARGS` in the project directory, with `HOME` set to it (shell stages inherit
    /// `HOME`, so a command can name project files without an absolute path).
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_medgen"));
        cmd.args(args)
            .current_dir(&self.dir)
            .env("HOME", &self.dir)
            .env_remove("MEDGEN_STORE")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    fn medgen(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("medgen runs")
    }

    /// `medgen ARGS` in the project's subdirectory `rel`.
    fn medgen_in(&self, rel: &str, args: &[&str]) -> Output {
        self.command(args).current_dir(self.path(rel)).output().expect("medgen runs")
    }

    fn store_arg(&self) -> &str {
        self.store.to_str().expect("utf-8 temp path")
    }

    /// `medgen CMD p.mg --store STORE EXTRA...`
    fn on_pipeline(&self, cmd: &str, extra: &[&str]) -> Output {
        let mut args = vec![cmd, "p.mg", "--store", self.store_arg()];
        args.extend(extra);
        self.medgen(&args)
    }

    fn run(&self, extra: &[&str]) -> Output {
        self.on_pipeline("run", extra)
    }

    /// Runs, expects success, and returns stderr.
    fn run_ok(&self, extra: &[&str]) -> String {
        let o = self.run(extra);
        assert_eq!(o.status.code(), Some(0), "medgen run {extra:?} failed:\n{}", stderr(&o));
        stderr(&o)
    }

    /// `medgen plan` (or `status`), which must succeed and run nothing: instance → (state, detail).
    fn plan_of(&self, cmd: &str, extra: &[&str]) -> BTreeMap<String, (String, String)> {
        let before = fs::read_to_string(&self.log).unwrap_or_default();
        let o = self.on_pipeline(cmd, extra);
        assert_eq!(o.status.code(), Some(0), "medgen {cmd} failed:\n{}", stderr(&o));
        assert_eq!(fs::read_to_string(&self.log).unwrap_or_default(), before, "medgen {cmd} ran a command");
        parse_plan(&stdout(&o))
    }

    fn plan(&self, extra: &[&str]) -> BTreeMap<String, (String, String)> {
        self.plan_of("plan", extra)
    }

    /// The instances whose commands ran since the last call, sorted.
    fn ran(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        let mut new = lines[self.seen.get().min(lines.len())..].to_vec();
        self.seen.set(lines.len());
        new.sort();
        new
    }

    /// Instance names of the committed entries in `objects/`, sorted.
    fn stored(&self) -> Vec<String> {
        let mut names: Vec<String> = self.objects().iter().map(|d| instance_of(d)).collect();
        names.sort();
        names
    }

    fn objects(&self) -> Vec<PathBuf> {
        entries(&self.store.join("objects"))
    }

    /// The one committed entry of an instance.
    fn object_of(&self, instance: &str) -> PathBuf {
        let found: Vec<PathBuf> = self.objects().into_iter().filter(|d| instance_of(d) == instance).collect();
        assert_eq!(found.len(), 1, "expected one stored entry of {instance}, found {found:?}");
        found.into_iter().next().expect("one entry")
    }

    /// Starts `medgen run` in the background (stderr piped).
    fn spawn_run(&self, extra: &[&str]) -> Child {
        let mut args = vec!["run", "p.mg", "--store", self.store_arg()];
        args.extend(extra);
        self.command(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("medgen starts")
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The entries of a directory (empty when it does not exist), sorted.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> =
        fs::read_dir(dir).map(|rd| rd.map(|e| e.expect("dir entry").path()).collect()).unwrap_or_default();
    found.sort();
    found
}

/// The instance a committed entry belongs to, from its `key.json`.
fn instance_of(object: &Path) -> String {
    let bytes = fs::read(object.join("key.json")).expect("a committed entry has key.json");
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("key.json is JSON");
    json["instance"].as_str().expect("key.json names its instance").to_string()
}

/// Parses `plan`/`status` lines (`  will run    stats  params.scale changed from 1 to 2`) into
/// instance → (state, detail). Instance names may hold spaces inside their brackets.
fn parse_plan(out: &str) -> BTreeMap<String, (String, String)> {
    let mut states = BTreeMap::new();
    for line in out.lines() {
        let line = line.trim_start();
        let state = ["up to date", "will run", "may run", "cannot run"]
            .into_iter()
            .find(|s| line.starts_with(s))
            .unwrap_or_else(|| panic!("unexpected plan line `{line}` in:\n{out}"));
        let rest = line[state.len()..].trim_start();
        let mut depth = 0;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                c if c.is_whitespace() && depth == 0 => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let old = states.insert(rest[..end].to_string(), (state.to_string(), rest[end..].trim().to_string()));
        assert!(old.is_none(), "instance listed twice in:\n{out}");
    }
    states
}

/// Checks a parsed plan: the same instances, each in the expected state, with a detail that
/// contains the expected text (an empty expectation means no detail at all).
fn assert_plan(plan: &BTreeMap<String, (String, String)>, expected: &[(&str, &str, &str)]) {
    let names: BTreeSet<&str> = plan.keys().map(String::as_str).collect();
    let wanted: BTreeSet<&str> = expected.iter().map(|e| e.0).collect();
    assert_eq!(names, wanted, "instances in the plan: {plan:#?}");
    for (name, state, detail) in expected {
        let (s, d) = &plan[*name];
        let detail_ok = if detail.is_empty() { d.is_empty() } else { d.contains(detail) };
        assert!(s == state && detail_ok, "{name}: expected `{state}` with `{detail}`, got `{s}` with `{d}`");
    }
}

/// Every instance up to date.
fn assert_up_to_date(plan: &BTreeMap<String, (String, String)>, names: &[&str]) {
    let expected: Vec<(&str, &str, &str)> = names.iter().map(|n| (*n, "up to date", "")).collect();
    assert_plan(plan, &expected);
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Polls `cond` until it holds; panics after [`TIMEOUT`].
fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_within(what, TIMEOUT, cond);
}

/// Polls `cond` until it holds; panics after `limit`.
fn wait_within(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    assert!(holds_within(limit, cond), "timed out waiting for {what}");
}

/// Polls `cond` until it holds (true) or `limit` passes (false).
fn holds_within(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Waits for a background `medgen` to exit; returns its status and stderr.
fn finish(mut child: Child) -> (ExitStatus, String) {
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for medgen") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("medgen did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut err);
    }
    (status, err)
}

/// Waits until a command has written its process id to `path`.
fn wait_for_pid(path: &Path) -> i32 {
    let mut pid = None;
    wait_until(&format!("the stage to write {}", path.display()), || {
        pid = fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok());
        pid.is_some()
    });
    pid.expect("a pid")
}

/// State letter and process group of a process; `None` when it does not exist.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp ...`; comm may contain anything, so start after the last `)`.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some((fields.first()?.chars().next()?, fields.get(2)?.parse().ok()?))
}

/// Whether a process exists and is not a zombie (a dead process nobody reaped yet).
fn running(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// Processes of a process group that are still running.
fn group_members(pgid: i32) -> Vec<i32> {
    entries(Path::new("/proc"))
        .iter()
        .filter_map(|p| p.file_name()?.to_str()?.parse::<i32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|(state, group)| group == pgid && state != 'Z' && state != 'X'))
        .collect()
}

/// Kills what is left of a process group (cleanup; ignores errors).
fn kill_group(pgid: i32) {
    // SAFETY: sending a signal has no memory-safety implications.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

// ---------------------------------------------------------------------------------------------
// A pipeline with a chain, fan-out (a sweep), a second branch and fan-in.

const GRAPH: &str = r#"pipeline demo

# the chain starts from a data file
stage prep = shell {
  command = "@LOG && sort {in.raw} > {out.table}"
  inputs  = {raw: "data/raw.csv"}
  outputs = [table]
}

# fan-out: one instance per sweep value
stage fit = shell {
  command = "@LOG && head -n {params.n} {prep.table} > {out.model}"
  outputs = [model]
  sweep params in [{n: 1}, {n: 2}]
}

# a second branch off prep
stage stats = shell {
  command = "@LOG && wc -l < {prep.table} > {out.count} && echo scale {params.scale} >> {out.count}"
  params  = {scale: 1}
  outputs = [count]
}

# fan-in: each fit instance with stats
stage report = shell {
  command = "@LOG && cat {fit.model} {stats.count} > {out.summary}"
  outputs = [summary]
}
"#;

const PREP: &str = "prep";
const FIT1: &str = "fit[params.n=1]";
const FIT2: &str = "fit[params.n=2]";
const STATS: &str = "stats";
const REPORT1: &str = "report[fit.params.n=1]";
const REPORT2: &str = "report[fit.params.n=2]";
const ALL: [&str; 6] = [PREP, FIT1, FIT2, STATS, REPORT1, REPORT2];

/// The GRAPH project, run once (everything ran).
fn graph_project(name: &str) -> Project {
    let p = Project::new(name);
    p.write("data/raw.csv", "b\na\nc\n");
    p.pipeline(GRAPH);
    let err = p.run_ok(&[]);
    assert_eq!(p.ran(), sorted(&ALL), "{err}");
    p
}

#[test]
fn plan_before_the_first_run_then_a_second_run_executes_nothing() {
    let p = Project::new("noop");
    p.write("data/raw.csv", "b\na\nc\n");
    p.pipeline(GRAPH);
    assert_plan(
        &p.plan(&[]),
        &[
            (PREP, "will run", "new"),
            (FIT1, "may run", "if prep changes its output"),
            (FIT2, "may run", "if prep changes its output"),
            (STATS, "may run", "if prep changes its output"),
            (REPORT1, "may run", "stats, fit[params.n=1]"),
            (REPORT2, "may run", "stats, fit[params.n=2]"),
        ],
    );
    let err = p.run_ok(&[]);
    assert!(err.contains("run      prep  (new)"), "{err}");
    assert!(err.contains("demo: 6 ran, 0 cached"), "{err}");
    assert_eq!(p.ran(), sorted(&ALL));
    assert_eq!(p.stored(), sorted(&ALL));
    // The outputs are what the commands computed from the data.
    let summary = fs::read_to_string(p.object_of(REPORT2).join("out/summary")).expect("summary");
    assert_eq!(summary, "a\nb\n3\nscale 1\n");

    let err = p.run_ok(&[]);
    assert!(err.contains("demo: 0 ran, 6 cached"), "{err}");
    assert_eq!(p.ran(), Vec::<String>::new());
    assert_up_to_date(&p.plan(&[]), &ALL);
    // Re-hashing everything finds nothing to do either.
    p.run_ok(&["--verify"]);
    assert_eq!(p.ran(), Vec::<String>::new());
    assert_eq!(p.objects().len(), 6);
}

#[test]
fn a_parameter_change_reruns_exactly_that_stage_and_its_descendants() {
    let p = graph_project("param");
    p.edit("params  = {scale: 1}", "params  = {scale: 2}");
    assert_plan(
        &p.plan(&[]),
        &[
            (PREP, "up to date", ""),
            (FIT1, "up to date", ""),
            (FIT2, "up to date", ""),
            (STATS, "will run", "params.scale changed from 1 to 2"),
            (REPORT1, "may run", "if stats changes its output"),
            (REPORT2, "may run", "if stats changes its output"),
        ],
    );
    let err = p.run_ok(&[]);
    assert_eq!(p.ran(), sorted(&[STATS, REPORT1, REPORT2]), "{err}");
    assert!(err.contains("run      stats  (params.scale changed from 1 to 2)"), "{err}");
    assert!(err.contains("run      report[fit.params.n=1]  (output of stats changed)"), "{err}");
    assert!(err.contains("demo: 3 ran, 3 cached"), "{err}");
    p.run_ok(&[]);
    assert_eq!(p.ran(), Vec::<String>::new());

    // Going back to the old value finds the old outputs still stored.
    p.edit("params  = {scale: 2}", "params  = {scale: 1}");
    assert_up_to_date(&p.plan(&[]), &ALL);
    p.run_ok(&[]);
    assert_eq!(p.ran(), Vec::<String>::new());

    // A new sweep value is a new instance; the other one stays.
    p.edit("[{n: 1}, {n: 2}]", "[{n: 1}, {n: 3}]");
    assert_plan(
        &p.plan(&[]),
        &[
            (PREP, "up to date", ""),
            (FIT1, "up to date", ""),
            ("fit[params.n=3]", "will run", "new"),
            (STATS, "up to date", ""),
            (REPORT1, "up to date", ""),
            ("report[fit.params.n=3]", "may run", "if fit[params.n=3] changes its output"),
        ],
    );
    p.run_ok(&[]);
    assert_eq!(p.ran(), sorted(&["fit[params.n=3]", "report[fit.params.n=3]"]));
}

#[test]
fn set_overrides_change_the_key_like_an_edit() {
    let p = graph_project("set");
    let set = ["--set", "stats.params={scale: 5}"];
    assert_plan(
        &p.plan(&set),
        &[
            (PREP, "up to date", ""),
            (FIT1, "up to date", ""),
            (FIT2, "up to date", ""),
            (STATS, "will run", "params.scale changed from 1 to 5"),
            (REPORT1, "may run", "if stats changes its output"),
            (REPORT2, "may run", "if stats changes its output"),
        ],
    );
    p.run_ok(&set);
    assert_eq!(p.ran(), sorted(&[STATS, REPORT1, REPORT2]));
    p.run_ok(&set);
    assert_eq!(p.ran(), Vec::<String>::new());
    // Without the override, the file's values are still stored.
    assert_up_to_date(&p.plan(&[]), &ALL);
    p.run_ok(&[]);
    assert_eq!(p.ran(), Vec::<String>::new());

    // Fixing a sweep to one of its values leaves one instance, named after the stage, whose
    // key is that of the swept instance: nothing to do.
    let fixed = ["--set", "fit.params={n: 2}"];
    assert_up_to_date(&p.plan(&fixed), &[PREP, "fit", STATS, "report"]);
    p.run_ok(&fixed);
    assert_eq!(p.ran(), Vec::<String>::new());
}

#[test]
fn input_files_count_by_content_not_by_timestamp_or_name() {
    let p = graph_project("inputs");

    // Touching the file (a different modification time, same bytes) changes nothing.
    let old = SystemTime::now() - Duration::from_secs(3600);
    fs::File::options().write(true).open(p.path("data/raw.csv")).expect("open").set_modified(old).expect("touch");
    assert_up_to_date(&p.plan(&[]), &ALL);
    p.run_ok(&[]);
    assert_eq!(p.ran(), Vec::<String>::new());

    // Renaming it and updating the path, same bytes: nothing either.
    fs::rename(p.path("data/raw.csv"), p.path("data/moved.csv")).expect("rename");
    p.edit("\"data/raw.csv\"", "\"data/moved.csv\"");
    assert_up_to_date(&p.plan(&[]), &ALL);
    p.run_ok(&[]);
    assert_eq!(p.ran(), Vec::<String>::new());

    // New bytes that sort to the same table: prep reruns, and the cut-off stops there.
    p.write("data/moved.csv", "c\nb\na\n");
    assert_plan(
        &p.plan(&[]),
        &[
            (PREP, "will run", "input file inputs.raw changed"),
            (FIT1, "may run", "if prep changes its output"),
            (FIT2, "may run", "if prep changes its output"),
            (STATS, "may run", "if prep changes its output"),
            (REPORT1, "may run", "stats, fit[params.n=1]"),
            (REPORT2, "may run", "stats, fit[params.n=2]"),
        ],
    );
    let err = p.run_ok(&[]);
    assert_eq!(p.ran(), [PREP], "{err}");
    assert!(err.contains("run      prep  (input file inputs.raw changed)"), "{err}");
    assert_up_to_date(&p.plan(&[]), &ALL);

    // New bytes that change the table: everything downstream reruns, told why.
    p.write("data/moved.csv", "d\nb\na\nc\n");
    let err = p.run_ok(&[]);
    assert_eq!(p.ran(), sorted(&ALL), "{err}");
    assert!(err.contains("run      fit[params.n=1]  (output of prep changed)"), "{err}");
    assert!(err.contains("run      report[fit.params.n=2]  (output of"), "{err}");
    // The command read the renamed file through {in.raw}.
    let object = p
        .objects()
        .into_iter()
        .filter(|o| instance_of(o) == PREP)
        .find(|o| fs::read_to_string(o.join("out/table")).is_ok_and(|t| t == "a\nb\nc\nd\n"));
    assert!(object.is_some(), "no stored prep output holds the new table");
}

#[test]
fn an_upstream_rerun_with_identical_output_stops_the_invalidation() {
    let p = graph_project("cutoff");
    p.edit("sort {in.raw} > {out.table}", "cat {in.raw} | sort > {out.table}");
    assert_plan(
        &p.plan(&[]),
        &[
            (PREP, "will run", "command changed from"),
            (FIT1, "may run", "if prep changes its output"),
            (FIT2, "may run", "if prep changes its output"),
            (STATS, "may run", "if prep changes its output"),
            (REPORT1, "may run", "stats, fit[params.n=1]"),
            (REPORT2, "may run", "stats, fit[params.n=2]"),
        ],
    );
    let err = p.run_ok(&[]);
    assert_eq!(p.ran(), [PREP], "{err}");
    assert!(err.contains("demo: 1 ran, 5 cached"), "{err}");
    assert_up_to_date(&p.plan(&[]), &ALL);
    p.run_ok(&[]);
    assert_eq!(p.ran(), Vec::<String>::new());
}

#[test]
fn a_new_stage_runs_alone() {
    let p = graph_project("newstage");
    let text = fs::read_to_string(p.path("p.mg")).expect("read");
    p.write(
        "p.mg",
        &format!(
            "{text}\nstage reverse = shell {{\n  command = \"{}\"\n  outputs = [rev]\n}}\n",
            p.expand("@LOG && sort -r {prep.table} > {out.rev}")
        ),
    );
    let plan = p.plan(&[]);
    let mut expected: Vec<(&str, &str, &str)> = ALL.iter().map(|n| (*n, "up to date", "")).collect();
    expected.push(("reverse", "will run", "new"));
    assert_plan(&plan, &expected);
    p.run_ok(&[]);
    assert_eq!(p.ran(), ["reverse"]);
    assert_eq!(fs::read_to_string(p.object_of("reverse").join("out/rev")).expect("rev"), "c\nb\na\n");
}

/// GRAPH written differently: stages in another order, one-line blocks, a constant, comments,
/// a trailing comma. The checked values are the same.
const GRAPH_REWRITTEN: &str = r#"pipeline demo
scale = 1   # the stats scale
stage report=shell{command="@LOG && cat {fit.model} {stats.count} > {out.summary}" outputs=[summary]}
stage stats = shell {
  outputs = [count]
  params = {scale: scale}
  command = "@LOG && wc -l < {prep.table} > {out.count} && echo scale {params.scale} >> {out.count}"
}
stage fit = shell { sweep params in [{n: 1}, {n: 2},]  outputs = [model]
  command = "@LOG && head -n {params.n} {prep.table} > {out.model}" }
stage prep = shell { inputs = {raw: "data/raw.csv"} outputs = [table] command = "@LOG && sort {in.raw} > {out.table}" }
"#;

#[test]
fn the_layout_of_the_file_is_not_part_of_any_key() {
    let p = graph_project("layout");
    p.pipeline(GRAPH_REWRITTEN);
    assert_up_to_date(&p.plan(&[]), &ALL);
    p.run_ok(&[]);
    assert_eq!(p.ran(), Vec::<String>::new());
    let o = p.medgen(&["fmt", "p.mg"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_up_to_date(&p.plan(&[]), &ALL);
    // Seeds are for stages that draw random numbers; a shell stage has none.
    assert_up_to_date(&p.plan(&["--set", "seed=7"]), &ALL);
}

/// Copies a directory tree (files and directories only).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create dir");
    for entry in entries(from) {
        let target = to.join(entry.file_name().expect("a name"));
        if entry.is_dir() {
            copy_tree(&entry, &target);
        } else {
            fs::copy(&entry, &target).expect("copy a file");
        }
    }
}

#[test]
fn a_moved_project_with_its_store_is_still_up_to_date() {
    // Commands that name no absolute path: the log is under $HOME, which is the project.
    let graph = GRAPH.replace("@LOG", "echo \\\"$MEDGEN_STAGE\\\" >> \\\"$HOME/ran.log\\\"");
    let old = Project::new("moved-from");
    old.write("data/raw.csv", "b\na\nc\n");
    old.pipeline(&graph);
    old.run_ok(&[]);
    assert_eq!(old.ran(), sorted(&ALL));
    let new = Project::new("moved-to");
    copy_tree(&old.dir, &new.dir);
    drop(old);
    new.ran();
    assert_up_to_date(&new.plan(&[]), &ALL);
    new.run_ok(&[]);
    assert_eq!(new.ran(), Vec::<String>::new());
    new.write("data/raw.csv", "b\na\nc\nd\n");
    new.run_ok(&[]);
    assert_eq!(new.ran(), sorted(&ALL), "the moved project's commands log to its own directory");
}

#[test]
fn verify_rehashes_inputs_whose_stat_was_made_to_look_unchanged() {
    let p = Project::new("statcache");
    p.write("data/raw.csv", "b\na\nc\n");
    let old = SystemTime::now() - Duration::from_secs(3600);
    let set_old = || {
        let f = fs::File::options().write(true).open(p.path("data/raw.csv")).expect("open");
        f.set_modified(old).expect("set mtime");
    };
    set_old();
    p.pipeline(GRAPH);
    p.run_ok(&[]);
    assert_eq!(p.ran(), sorted(&ALL));
    // Same size, same inode, the old modification time put back: only the bytes differ.
    {
        use std::io::Write;
        let mut f = fs::File::options().write(true).open(p.path("data/raw.csv")).expect("open");
        f.write_all(b"d").expect("overwrite the first byte");
    }
    set_old();
    let err = p.run_ok(&["--verify"]);
    // The table is now a c d: fit[params.n=1] still writes `a` and stats still counts 3 lines,
    // so report[fit.params.n=1] is cut off.
    assert_eq!(p.ran(), sorted(&[PREP, FIT1, FIT2, STATS, REPORT2]), "{err}");
    assert!(err.contains("run      prep  (input file inputs.raw changed)"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Crashes, interruptions, concurrent runs.

/// `slow` sleeps on its first attempt only, so a run after an interruption is quick.
const SLOW: &str = r#"pipeline slow

stage first = shell {
  command = "@LOG && echo data > {out.o}"
  outputs = [o]
}

stage slow = shell {
  command = "@LOG && echo $$ > @DIR/slow.pid && if [ ! -e @DIR/slept ]; then : > @DIR/slept; sleep 10; fi && cat {first.o} > {out.o}"
  outputs = [o]
}

stage last = shell {
  command = "@LOG && cat {slow.o} > {out.o}"
  outputs = [o]
}
"#;

/// Starts the SLOW pipeline and waits until `slow` is sleeping; returns medgen and the process
/// group of the stage's command (its shell's pid).
fn start_slow(p: &Project) -> (Child, i32) {
    p.pipeline(SLOW);
    let child = p.spawn_run(&["-j", "2"]);
    let pgid = wait_for_pid(&p.path("slow.pid"));
    wait_until("the stage to start sleeping", || p.path("slept").exists());
    assert_eq!(p.ran(), ["first", "slow"]);
    assert_eq!(p.stored(), ["first"]);
    assert_eq!(entries(&p.store.join("tmp")).len(), 1, "the running attempt has its tmp/ directory");
    (child, pgid)
}

#[test]
fn kill_9_during_a_stage_records_nothing_and_the_next_run_completes() {
    let p = Project::new("kill9");
    let (mut child, pgid) = start_slow(&p);
    child.kill().expect("SIGKILL medgen");
    let status = child.wait().expect("reap medgen");
    assert_eq!(status.code(), None, "killed by a signal");
    // The command's shell dies with medgen (PR_SET_PDEATHSIG), well before its `sleep 10` ends.
    wait_within("the stage's shell to die with medgen", Duration::from_secs(3), || !running(pgid));
    // The `sleep` it started may outlive it (see the ignored test below); don't leave it behind.
    kill_group(pgid);

    // Nothing of `slow` is trusted: no entry, only an abandoned attempt in tmp/.
    assert_eq!(p.stored(), ["first"]);
    assert_eq!(entries(&p.store.join("tmp")).len(), 1);
    assert_plan(
        &p.plan(&[]),
        &[("first", "up to date", ""), ("slow", "will run", "new"), ("last", "may run", "if slow changes its output")],
    );
    let err = p.run_ok(&[]);
    assert_eq!(p.ran(), ["last", "slow"], "{err}");
    assert_eq!(p.stored(), ["first", "last", "slow"]);
    assert_eq!(fs::read_to_string(p.object_of("last").join("out/o")).expect("output"), "data\n");
    // The dead process's lock on `slow` was taken over, and its file went with the release.
    assert_eq!(entries(&p.store.join("locks")), Vec::<PathBuf>::new());
    p.run_ok(&[]);
    assert_eq!(p.ran(), Vec::<String>::new());

    // gc removes the dead process's attempt and keeps every used output.
    let o = p.medgen(&["gc", "--store", p.store_arg()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(entries(&p.store.join("tmp")).is_empty(), "gc left {:?}", entries(&p.store.join("tmp")));
    assert_eq!(p.stored(), ["first", "last", "slow"]);
}

#[test]
fn kill_9_during_a_stage_leaves_none_of_its_processes_running() {
    let p = Project::new("kill9group");
    let (mut child, pgid) = start_slow(&p);
    child.kill().expect("SIGKILL medgen");
    child.wait().expect("reap medgen");
    let gone = holds_within(Duration::from_secs(3), || group_members(pgid).is_empty());
    let left = group_members(pgid);
    kill_group(pgid);
    assert!(gone, "processes of the killed stage still running: {left:?} (its `sleep 10`)");
}

/// Interrupts a run in the middle of `slow` with `signal`: it stops the stage, records nothing
/// of it, exits 130, and a later run completes.
fn interrupt(name: &str, signal: i32) {
    let p = Project::new(name);
    let (child, pgid) = start_slow(&p);
    // SAFETY: signalling our own child process.
    let sent = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(sent, 0, "signal sent");
    let (status, err) = finish(child);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains("cancelled slow"), "{err}");
    // The whole command was stopped, and its attempt discarded.
    wait_until("the stage's processes to stop", || group_members(pgid).is_empty());
    assert_eq!(p.stored(), ["first"]);
    assert!(entries(&p.store.join("tmp")).is_empty(), "{:?}", entries(&p.store.join("tmp")));
    assert_plan(
        &p.plan(&[]),
        &[("first", "up to date", ""), ("slow", "will run", "new"), ("last", "may run", "if slow changes its output")],
    );
    let err = p.run_ok(&[]);
    assert_eq!(p.ran(), ["last", "slow"], "{err}");
    assert_eq!(p.stored(), ["first", "last", "slow"]);
}

#[test]
fn ctrl_c_stops_the_stage_records_nothing_and_exits_130() {
    interrupt("sigint", libc::SIGINT);
}

#[test]
fn sigterm_is_handled_like_ctrl_c() {
    interrupt("sigterm", libc::SIGTERM);
}

const DIAMOND: &str = r#"pipeline diamond

stage a = shell {
  command = "@LOG && sleep 0.3 && echo a > {out.o}"
  outputs = [o]
}

stage b = shell {
  command = "@LOG && sleep 0.3 && cat {a.o} > {out.o} && echo b >> {out.o}"
  outputs = [o]
}

stage c = shell {
  command = "@LOG && sleep 0.3 && cat {a.o} > {out.o} && echo c >> {out.o}"
  outputs = [o]
}

stage d = shell {
  command = "@LOG && sleep 0.3 && cat {b.o} {c.o} > {out.o}"
  outputs = [o]
}
"#;

/// Two `medgen run` at once on one store; returns both stderrs.
fn two_runs(p: &Project) -> [String; 2] {
    p.pipeline(DIAMOND);
    let first = p.spawn_run(&["-j", "2"]);
    let second = p.spawn_run(&["-j", "2"]);
    let (s1, e1) = finish(first);
    let (s2, e2) = finish(second);
    assert_eq!(s1.code(), Some(0), "first run:\n{e1}\nsecond run:\n{e2}");
    assert_eq!(s2.code(), Some(0), "first run:\n{e1}\nsecond run:\n{e2}");
    [e1, e2]
}

#[test]
fn two_concurrent_runs_on_one_store_execute_each_stage_once() {
    let p = Project::new("concurrent");
    let [e1, e2] = two_runs(&p);
    assert_eq!(p.ran(), ["a", "b", "c", "d"], "first run:\n{e1}\nsecond run:\n{e2}");
    assert_eq!(p.stored(), ["a", "b", "c", "d"]);
    assert_eq!(fs::read_to_string(p.object_of("d").join("out/o")).expect("output"), "a\nb\na\nc\n");
    p.run_ok(&[]);
    assert_eq!(p.ran(), Vec::<String>::new());
}

#[test]
fn two_concurrent_runs_report_each_stage_as_ran_by_one_of_them() {
    let p = Project::new("concurrentreport");
    let errs = two_runs(&p);
    let ran: usize = errs
        .iter()
        .map(|e| {
            let summary = e.lines().find(|l| l.starts_with("diamond: ")).expect("summary line");
            summary["diamond: ".len()..].split(' ').next().expect("count").parse::<usize>().expect("a number")
        })
        .sum();
    assert_eq!(ran, 4, "between them the runs computed 4 stages, but they say:\n{}\n{}", errs[0], errs[1]);
}

// ---------------------------------------------------------------------------------------------
// Corrupted outputs.

#[test]
fn a_corrupted_output_is_caught_by_verify_and_recomputed() {
    let p = graph_project("corrupt");
    let table = p.object_of(PREP).join("out/table");
    let mut bytes = fs::read(&table).expect("stored table");
    assert_eq!(bytes, b"a\nb\nc\n");
    bytes[0] = b'z';
    fs::write(&table, &bytes).expect("corrupt one byte");

    // The cheap check (sizes) does not see a changed byte.
    p.run_ok(&[]);
    assert_eq!(p.ran(), Vec::<String>::new());
    assert_up_to_date(&p.plan(&[]), &ALL);

    let err = p.run_ok(&["--verify"]);
    assert!(err.contains("stored output is corrupt (table does not match its recorded hash"), "{err}");
    // Recomputed bytes equal the original ones, so nothing downstream reruns.
    assert_eq!(p.ran(), [PREP], "{err}");
    assert_eq!(fs::read(p.object_of(PREP).join("out/table")).expect("table"), b"a\nb\nc\n");
    assert_eq!(entries(&p.store.join("corrupt")).len(), 1, "the corrupt entry is kept aside");
    p.run_ok(&["--verify"]);
    assert_eq!(p.ran(), Vec::<String>::new());
}

#[test]
fn a_truncated_output_is_noticed_by_a_plain_run() {
    let p = graph_project("truncate");
    let count = p.object_of(STATS).join("out/count");
    let size = fs::metadata(&count).expect("stored count").len();
    fs::File::options().write(true).open(&count).expect("open").set_len(0).expect("truncate");
    assert_plan(
        &p.plan(&[]),
        &[
            (PREP, "up to date", ""),
            (FIT1, "up to date", ""),
            (FIT2, "up to date", ""),
            (STATS, "will run", &format!("stored output is corrupt (count has 0 bytes, {size} were written")),
            (REPORT1, "may run", "if stats changes its output"),
            (REPORT2, "may run", "if stats changes its output"),
        ],
    );
    let err = p.run_ok(&[]);
    assert!(err.contains("run      stats  (stored output is corrupt (count has 0 bytes"), "{err}");
    assert_eq!(p.ran(), [STATS], "{err}");
    assert_eq!(fs::metadata(p.object_of(STATS).join("out/count")).expect("count").len(), size);
    p.run_ok(&[]);
    assert_eq!(p.ran(), Vec::<String>::new());
}

#[test]
fn an_edited_metric_is_caught_and_recomputed() {
    let p = Project::new("metric");
    p.pipeline(
        r#"pipeline gate

stage score = shell {
  command = "@LOG && echo '{\"acc\": 0.5}' > {out.metrics}"
  outputs = [metrics]
  metrics = [acc]
  expect acc >= 0.8
}
"#,
    );
    let o = p.run(&[]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(p.ran(), ["score"]);
    // No file's hash covers a metric: only the manifest holds it.
    let manifest = p.object_of("score").join("manifest.json");
    let text = fs::read_to_string(&manifest).expect("manifest.json");
    assert_eq!(text.matches("\"acc\": 0.5").count(), 1, "{text}");
    fs::write(&manifest, text.replace("\"acc\": 0.5", "\"acc\": 0.9")).expect("edit the metric");

    assert_plan(
        &p.plan(&[]),
        &[("score", "will run", "stored output is corrupt (manifest.json was changed after it was written")],
    );
    let o = p.run(&["--verify"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "the edited value passed the expectation: {err}");
    assert!(err.contains("score  acc >= 0.8  measured 0.500000  FAILED"), "{err}");
    assert_eq!(p.ran(), ["score"], "{err}");
    assert_eq!(entries(&p.store.join("corrupt")).len(), 1, "the edited entry is kept aside");
    let o = p.run(&["--verify"]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(p.ran(), Vec::<String>::new());
}

#[test]
fn verify_refuses_a_file_added_to_a_stored_output() {
    let p = graph_project("extra");
    fs::write(p.object_of(PREP).join("out/extra"), "x").expect("add a file");
    let err = p.run_ok(&["--verify"]);
    assert!(err.contains("run      prep  (stored output is corrupt (extra is not in its manifest"), "{err}");
    assert_eq!(p.ran(), [PREP], "{err}");
    assert!(!p.object_of(PREP).join("out/extra").exists());
}

#[test]
fn identical_output_files_are_stored_once() {
    let p = Project::new("dedup");
    p.pipeline(
        r#"pipeline dedup

stage train = shell {
  command = "@LOG && echo weights > {out.best} && echo weights > {out.last} && echo other > {out.log}"
  outputs = [best, last, log]
}

stage consume = shell {
  command = "@LOG && cat {train.best} {train.last} > {out.o}"
  outputs = [o]
}
"#,
    );
    p.run_ok(&[]);
    assert_eq!(p.ran(), ["consume", "train"]);
    let out = p.object_of("train").join("out");
    let inode = |name: &str| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(out.join(name)).expect("a stored file").ino()
    };
    assert_eq!(inode("best"), inode("last"), "identical files are one file");
    assert_ne!(inode("best"), inode("log"));
    assert_eq!(fs::read_to_string(p.object_of("consume").join("out/o")).expect("o"), "weights\nweights\n");
    p.run_ok(&["--verify"]);
    assert_eq!(p.ran(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Failures.

const FAILING: &str = r#"pipeline failing

stage bad = shell {
  command = "@LOG && echo 'boom: the data is bad' >&2 && exit 1"
  outputs = [o]
}

stage after_bad = shell {
  command = "@LOG && cat {bad.o} > {out.o}"
  outputs = [o]
}

stage other = shell {
  command = "@LOG && echo fine > {out.o}"
  outputs = [o]
}
"#;

#[test]
fn a_failing_command_stops_the_run_and_records_nothing() {
    let p = Project::new("fail");
    p.pipeline(FAILING);
    // One job at a time, so `other` is still waiting when `bad` fails.
    let o = p.run(&["-j", "1"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("FAILED   bad: the command exited with status 1"), "{err}");
    assert!(err.contains("error: stage bad failed: the command exited with status 1"), "{err}");
    assert!(err.contains("    | boom: the data is bad"), "the stderr tail is shown: {err}");
    assert!(err.contains("skipped  after_bad: `bad` did not succeed"), "{err}");
    assert!(err.contains("failing: 0 ran, 0 cached, 1 failed, 1 skipped, 1 not started"), "{err}");
    assert_eq!(p.ran(), ["bad"]);
    assert!(p.objects().is_empty(), "{:?}", p.stored());
    assert!(entries(&p.store.join("tmp")).is_empty(), "the failed attempt is discarded");
    assert_plan(
        &p.plan(&[]),
        &[
            ("bad", "will run", "new"),
            ("after_bad", "may run", "if bad changes its output"),
            ("other", "will run", "new"),
        ],
    );
}

#[test]
fn keep_going_runs_what_does_not_depend_on_the_failure() {
    let p = Project::new("keepgoing");
    p.pipeline(FAILING);
    let o = p.run(&["-j", "1", "--keep-going"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("failing: 1 ran, 0 cached, 1 failed, 1 skipped"), "{err}");
    assert!(!err.contains("not started"), "{err}");
    assert_eq!(p.ran(), ["bad", "other"]);
    assert_eq!(p.stored(), ["other"]);

    // Fixed, the failed stage and what it blocked run; the rest is cached.
    p.edit("echo 'boom: the data is bad' >&2 && exit 1", "echo fixed > {out.o}");
    p.run_ok(&[]);
    assert_eq!(p.ran(), ["after_bad", "bad"]);
}

#[test]
fn a_stage_that_failed_on_new_upstream_output_is_retried_and_plan_says_why() {
    let p = Project::new("retry");
    p.write("data.txt", "good\n");
    p.pipeline(
        r#"pipeline retry

stage load = shell {
  command = "@LOG && cp {in.data} {out.o}"
  inputs  = {data: "data.txt"}
  outputs = [o]
}

stage check = shell {
  command = "@LOG && ! grep -q bad {load.o} && cp {load.o} {out.o}"
  outputs = [o]
}
"#,
    );
    p.run_ok(&[]);
    assert_eq!(p.ran(), ["check", "load"]);
    p.write("data.txt", "bad\n");
    let o = p.run(&[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(p.ran(), ["check", "load"]);
    assert_plan(&p.plan(&[]), &[("load", "up to date", ""), ("check", "will run", "output of load changed")]);
    // Back to the old data: both old outputs are still stored.
    p.write("data.txt", "good\n");
    p.run_ok(&[]);
    assert_eq!(p.ran(), Vec::<String>::new());
}

#[test]
fn a_command_that_does_not_write_a_declared_output_fails_naming_it() {
    let p = Project::new("nooutput");
    p.pipeline(
        r#"pipeline nooutput

stage half = shell {
  command = "@LOG && echo a > {out.a}"
  outputs = [a, b]
}
"#,
    );
    let o = p.run(&[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("error: stage half failed: the command did not write its declared output `b` ({out.b})"),
        "{err}"
    );
    assert_eq!(p.ran(), ["half"]);
    assert!(p.objects().is_empty());
    assert!(entries(&p.store.join("tmp")).is_empty());
}

#[test]
fn a_missing_input_file_is_named_and_nothing_runs_on_it() {
    // The checker refuses it (E0031) before planning, so neither `plan` nor `run` gets further.
    let p = Project::new("noinput");
    p.pipeline(GRAPH);
    for cmd in ["plan", "run"] {
        let o = p.on_pipeline(cmd, &[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("E0031") && err.contains("\"data/raw.csv\", which does not exist"), "{err}");
        assert!(err.contains("p.mg:6:13"), "the diagnostic points at the path: {err}");
    }
    assert_eq!(p.ran(), Vec::<String>::new());
    assert!(p.objects().is_empty());
}

#[test]
fn declared_metrics_must_be_written() {
    let p = Project::new("metrics");
    p.pipeline(
        r#"pipeline metrics

stage partial = shell {
  command = "@LOG && echo '{\"acc\": 0.75}' > {out.metrics}"
  outputs = [metrics]
  metrics = [acc, dice]
}

stage nofile = shell {
  command = "@LOG && echo done > {out.report}"
  outputs = [report]
  metrics = [acc]
}

stage garbled = shell {
  command = "@LOG && echo 'acc=0.75' > {out.metrics}"
  outputs = [metrics]
  metrics = [acc]
}
"#,
    );
    let o = p.run(&["--keep-going"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("error: stage partial failed: {out.metrics} has no number `dice`"), "{err}");
    assert!(
        err.contains(
            "error: stage nofile failed: the command did not write its declared output `metrics` ({out.metrics})"
        ),
        "{err}"
    );
    assert!(err.contains("error: stage garbled failed: {out.metrics} is not a JSON object of numbers"), "{err}");
    assert!(err.contains("0 ran, 0 cached, 3 failed"), "{err}");
    assert_eq!(p.ran(), ["garbled", "nofile", "partial"]);
    assert!(p.objects().is_empty(), "{:?}", p.stored());
}

#[test]
fn expectations_gate_the_exit_status_even_from_the_cache() {
    let p = Project::new("expect");
    p.pipeline(
        r#"pipeline gate

stage score = shell {
  command = "@LOG && echo '{\"acc\": 0.9, \"loss\": 0.25}' > {out.metrics}"
  outputs = [metrics]
  metrics = [acc, loss]
  expect acc >= 0.8
  expect loss < 0.5
}
"#,
    );
    let err = p.run_ok(&[]);
    assert!(err.contains("expectations:"), "{err}");
    assert!(err.contains("score  acc >= 0.8  measured 0.900000  ok"), "{err}");
    assert!(err.contains("score  loss < 0.5  measured 0.250000  ok"), "{err}");
    assert_eq!(p.ran(), ["score"]);

    // A stricter expectation is not part of the key: the stored metrics are judged again.
    p.edit("expect loss < 0.5", "expect loss < 0.1");
    let o = p.run(&[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("gate: 0 ran, 1 cached"), "{err}");
    assert!(err.contains("score  acc >= 0.8  measured 0.900000  ok"), "{err}");
    assert!(err.contains("score  loss < 0.1  measured 0.250000  FAILED"), "{err}");
    assert_eq!(p.ran(), Vec::<String>::new());

    let show = p.medgen(&["show", "score", "--store", p.store_arg()]);
    assert!(show.status.success(), "{}", stderr(&show));
    assert!(stdout(&show).contains("metric:  acc = 0.9"), "{}", stdout(&show));
    assert!(stdout(&show).contains("metric:  loss = 0.25"), "{}", stdout(&show));
}

// ---------------------------------------------------------------------------------------------
// gc, status, show, graph.

const TWO: &str = r#"pipeline two

stage prep = shell {
  command = "@LOG && sort {in.raw} > {out.table}"
  inputs  = {raw: "data/raw.csv"}
  outputs = [table]
}

stage leaf = shell {
  command = "@LOG && cat {prep.table} > {out.o} && echo {params.scale} >> {out.o}"
  params  = {scale: 1}
  outputs = [o]
}
"#;

/// The number in `removed 1 stored output (...)`, and the size text in the parentheses.
fn gc_summary(err: &str, verb: &str) -> (usize, String) {
    let line = err.lines().find(|l| l.starts_with(verb)).unwrap_or_else(|| panic!("no `{verb}` line in:\n{err}"));
    let count = line[verb.len()..].split_whitespace().next().expect("a count").parse().expect("a number");
    let size = line[line.find('(').expect("(") + 1..line.rfind(')').expect(")")].to_string();
    (count, size)
}

#[test]
fn gc_removes_only_what_no_pipeline_uses() {
    let p = Project::new("gc");
    p.write("data/raw.csv", "b\na\n");
    p.pipeline(TWO);
    p.run_ok(&[]);
    assert_eq!(p.ran(), ["leaf", "prep"]);
    p.edit("params  = {scale: 1}", "params  = {scale: 2}");
    p.run_ok(&[]);
    assert_eq!(p.ran(), ["leaf"]);
    assert_eq!(p.objects().len(), 3);

    let gc = |args: &[&str]| {
        let mut all = vec!["gc", "--store", p.store_arg()];
        all.extend(args);
        let o = p.medgen(&all);
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let err = gc(&["--dry-run"]);
    let (count, size) = gc_summary(&err, "would remove ");
    assert_eq!(count, 1, "{err}");
    assert_ne!(size, "0 B", "{err}");
    assert_eq!(p.objects().len(), 3, "a dry run removes nothing");

    let err = gc(&[]);
    let (count, freed) = gc_summary(&err, "removed ");
    assert_eq!(count, 1, "{err}");
    assert_ne!(freed, "0 B", "{err}");
    assert_eq!(p.stored(), ["leaf", "prep"]);
    p.run_ok(&[]);
    assert_eq!(p.ran(), Vec::<String>::new(), "gc removed something in use");
    assert_eq!(gc_summary(&gc(&["--dry-run"]), "would remove ").0, 0);

    // The collected value has to be computed again.
    p.edit("params  = {scale: 2}", "params  = {scale: 1}");
    assert_plan(&p.plan(&[]), &[("prep", "up to date", ""), ("leaf", "will run", "params.scale changed from 2 to 1")]);
    p.run_ok(&[]);
    assert_eq!(p.ran(), ["leaf"]);

    let err = gc(&["--all"]);
    assert_eq!(gc_summary(&err, "removed ").0, 3, "{err}");
    assert!(p.objects().is_empty());
    assert_plan(
        &p.plan(&[]),
        &[("prep", "will run", "output missing from the store"), ("leaf", "may run", "if prep changes its output")],
    );
    p.run_ok(&[]);
    assert_eq!(p.ran(), ["leaf", "prep"]);
}

/// A second pipeline for stores that two pipelines share.
const OTHER: &str = r#"pipeline other

stage solo = shell {
  command = "@LOG && echo solo > {out.o}"
  outputs = [o]
}
"#;

/// Runs `medgen gc ARGS` in the project directory; returns its exit code and stderr.
fn gc_in(p: &Project, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["gc"];
    all.extend(args);
    let o = p.medgen(&all);
    (o.status.code(), stderr(&o))
}

#[test]
fn gc_without_a_known_pipeline_removes_nothing() {
    // The store is away from the pipeline: no pipeline file is anywhere under its directory.
    let p = Project::new("gcaway");
    p.write("data/raw.csv", "b\na\n");
    p.pipeline(TWO);
    let store = p.path("stores/one");
    let store_arg = store.to_str().expect("utf-8 temp path");
    let o = p.medgen(&["run", "p.mg", "--store", store_arg]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let objects = || entries(&store.join("objects")).len();
    assert_eq!(objects(), 2);

    // The store's run records name the pipeline: its outputs are in use.
    let (code, err) = gc_in(&p, &["--store", store_arg]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(gc_summary(&err, "removed ").0, 0, "{err}");
    assert!(err.contains(&format!("{}: uses 2 stored outputs", p.path("p.mg").display())), "{err}");
    assert_eq!(objects(), 2);
    let o = p.command(&["gc"]).env("MEDGEN_STORE", &store).output().expect("medgen runs");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(objects(), 2, "with $MEDGEN_STORE: {}", stderr(&o));

    // Without run records gc cannot tell what is used: it removes nothing, and says what to pass.
    for record in entries(&store.join("runs")) {
        fs::remove_file(record).expect("remove a run record");
    }
    let (code, err) = gc_in(&p, &["--store", store_arg]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no run is recorded in") && err.contains("nothing was removed"), "{err}");
    assert!(err.contains("`medgen gc FILE...`") && err.contains("`medgen gc --all`"), "{err}");
    assert_eq!(objects(), 2);

    // Naming the pipeline works without records; `--all` is the way to empty the store.
    let (code, err) = gc_in(&p, &["p.mg", "--store", store_arg]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(objects(), 2, "{err}");
    let (code, err) = gc_in(&p, &["--all", "--store", store_arg]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(gc_summary(&err, "removed ").0, 2, "{err}");
    assert_eq!(objects(), 0);
}

#[test]
fn gc_keeps_the_outputs_of_a_recorded_pipeline_that_is_gone_or_broken() {
    let p = Project::new("gcunknown");
    p.write("data/raw.csv", "b\na\n");
    p.pipeline(TWO);
    p.write("q.mg", &p.expand(OTHER));
    p.run_ok(&[]);
    let o = p.medgen(&["run", "q.mg", "--store", p.store_arg()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    p.edit("params  = {scale: 1}", "params  = {scale: 2}");
    p.run_ok(&[]);
    assert_eq!(p.ran(), ["leaf", "leaf", "prep", "solo"]);
    assert_eq!(p.stored(), ["leaf", "leaf", "prep", "solo"]);
    let q = p.path("q.mg").display().to_string();

    // Gone: its outputs are unknown, not unused. Only p.mg's old `leaf` goes.
    fs::remove_file(p.path("q.mg")).expect("remove q.mg");
    let (code, err) = gc_in(&p, &["--store", p.store_arg()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(gc_summary(&err, "removed ").0, 1, "{err}");
    assert!(err.contains(&format!("{q}: no longer exists; keeping the 1 stored output its runs made")), "{err}");
    assert_eq!(p.stored(), ["leaf", "prep", "solo"]);

    // Broken: the same.
    p.write("q.mg", "pipeline other\n\nstage solo = shell {\n  command = 3\n}\n");
    let (code, err) = gc_in(&p, &["--store", p.store_arg()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(gc_summary(&err, "removed ").0, 0, "{err}");
    assert!(err.contains(&format!("{q}: does not check; keeping the 1 stored output its runs made")), "{err}");
    assert_eq!(p.stored(), ["leaf", "prep", "solo"]);

    // Named pipelines are the ones gc is told to keep: the others' outputs go, and gc says whose.
    let (code, err) = gc_in(&p, &["p.mg", "--store", p.store_arg()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(&format!("runs recorded in this store also used {q}")), "{err}");
    assert_eq!(gc_summary(&err, "removed ").0, 1, "{err}");
    assert_eq!(p.stored(), ["leaf", "prep"]);
    p.run_ok(&[]);
    assert_eq!(p.ran(), Vec::<String>::new());
}

#[test]
fn gc_reads_no_pipeline_it_was_not_told_about() {
    let p = Project::new("gcscan");
    p.write("data/raw.csv", "b\na\n");
    p.pipeline(TWO);
    // Pipelines that never ran with this store, one of them broken: none of gc's business.
    p.write("fixtures/broken.mg", "pipeline broken\nstage = \n");
    p.write("fixtures/other.mg", &p.expand(OTHER));
    let o = p.medgen(&["run", "p.mg"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (code, err) = gc_in(&p, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("fixtures"), "{err}");
    assert_eq!(gc_summary(&err, "removed ").0, 0, "{err}");
    assert_eq!(entries(&p.path(".medgen/objects")).len(), 2);
}

#[test]
fn gc_keeps_what_early_cut_off_may_bring_back() {
    let p = Project::new("gccutoff");
    p.write("data/raw.csv", "b\na\n");
    p.pipeline(TWO);
    p.run_ok(&[]);
    let set = ["--set", "leaf.params={scale: 3}"];
    p.run_ok(&set);
    assert_eq!(p.ran(), ["leaf", "leaf", "prep"]);
    // The input changes but sorts the same: prep must rerun, and each leaf waits on its output,
    // which will be the one both leaves' outputs were made from.
    p.write("data/raw.csv", "a\nb\n");
    let (code, err) = gc_in(&p, &["--store", p.store_arg()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(gc_summary(&err, "removed ").0, 1, "only prep's old output goes: {err}");
    assert_eq!(err.matches("uses 0 stored outputs, and keeps 1 more that a stage waiting").count(), 2, "{err}");
    assert_eq!(p.stored(), ["leaf", "leaf"]);
    p.run_ok(&[]);
    p.run_ok(&set);
    assert_eq!(p.ran(), ["prep"], "both leaves were cut off");
}

#[test]
fn show_status_and_gc_find_the_store_run_used_from_another_directory() {
    let p = Project::new("elsewhere");
    p.write("proj/data/raw.csv", "b\na\n");
    p.write("proj/p.mg", &p.expand(TWO));
    // From the parent directory, as after the README's quickstart: the store is beside the file.
    let o = p.medgen(&["run", "proj/p.mg"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let objects = || entries(&p.path("proj/.medgen/objects")).len();
    assert_eq!(objects(), 2);
    assert!(!p.path(".medgen").exists(), "run stores beside the pipeline");

    let o = p.medgen(&["status", "proj/p.mg"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let status = parse_plan(&stdout(&o));
    assert!(status.values().all(|(state, _)| state == "up to date"), "{status:?}");
    let o = p.medgen(&["show", "prep", "--pipeline", "proj/p.mg"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("  state:   up to date"), "{}", stdout(&o));
    // No pipeline and no store here: nothing to guess; the message says what to pass.
    let o = p.medgen(&["show", "prep"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no store in the current directory"), "{}", stderr(&o));
    assert!(stderr(&o).contains("`medgen show prep --pipeline FILE`"), "{}", stderr(&o));
    // In the pipeline's directory, the store there and the pipeline of its last run.
    let o = p.medgen_in("proj", &["show", "prep"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("  state:   up to date"), "{}", stdout(&o));

    let edited = fs::read_to_string(p.path("proj/p.mg")).expect("p.mg").replace("{scale: 1}", "{scale: 2}");
    p.write("proj/p.mg", &edited);
    let o = p.medgen(&["run", "proj/p.mg"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(objects(), 3);
    let o = p.medgen(&["gc"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("`medgen gc FILE...`"), "{}", stderr(&o));
    let o = p.medgen(&["gc", "proj/p.mg"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(gc_summary(&stderr(&o), "removed ").0, 1, "{}", stderr(&o));
    assert_eq!(objects(), 2);
    let o = p.medgen_in("proj", &["gc"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(gc_summary(&stderr(&o), "removed ").0, 0, "{}", stderr(&o));
}

#[test]
fn show_in_a_copied_project_reads_the_copy() {
    let old = Project::new("copied-from");
    old.write("data/raw.csv", "b\na\nc\n");
    old.pipeline(GRAPH);
    let o = old.medgen(&["run", "p.mg"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let new = Project::new("copied-to");
    copy_tree(&old.dir, &new.dir);
    // The original's outputs are gone; the copy has its own.
    fs::remove_dir_all(old.path(".medgen")).expect("remove the original store");
    let o = new.medgen(&["show", "prep"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("  state:   up to date"), "{out}");
    assert!(out.contains(&format!("  output:  {}", new.path(".medgen/objects").display())), "{out}");
    assert!(!old.path(".medgen").exists(), "show created a store beside the original");
    // gc in the copy evaluates the copy's pipeline.
    let (code, err) = gc_in(&new, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(&format!("{}: uses 6 stored outputs", new.path("p.mg").display())), "{err}");
}

#[test]
fn lock_files_go_when_released_and_at_gc() {
    let p = graph_project("locks");
    assert_eq!(entries(&p.store.join("locks")), Vec::<PathBuf>::new(), "every lock was released");
    // What a holder killed by SIGKILL leaves: the file, which no one holds.
    let key = p.object_of(PREP).file_name().expect("a key").to_string_lossy().into_owned();
    fs::write(p.store.join("locks").join(format!("{key}.lock")), "").expect("a leftover lock file");
    let (code, err) = gc_in(&p, &["--store", p.store_arg()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(entries(&p.store.join("locks")), Vec::<PathBuf>::new(), "gc removes free lock files");
    fs::write(p.store.join("locks").join(format!("{key}.lock")), "").expect("a leftover lock file");
    let (code, err) = gc_in(&p, &["--all", "--store", p.store_arg()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(entries(&p.store.join("locks")), Vec::<PathBuf>::new(), "gc --all too");
}

#[test]
fn status_and_show_describe_each_instance() {
    let p = graph_project("show");
    let status = p.plan_of("status", &[]);
    for name in ALL {
        let (state, detail) = &status[name];
        assert_eq!(state, "up to date");
        assert!(detail.starts_with("[last ran ") && detail.contains(" ago, took "), "{name}: {detail}");
    }

    let show = |args: &[&str]| {
        let mut all = vec!["show"];
        all.extend(args);
        all.extend(["--store", p.store_arg()]);
        p.medgen(&all)
    };
    let o = show(&["prep"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let object = p.object_of(PREP);
    let key = object.file_name().expect("key dir").to_string_lossy().into_owned();
    assert!(out.starts_with("prep (shell)\n  state:   up to date\n"), "{out}");
    assert!(out.contains(&format!("  key:     {key}\n")), "{out}");
    assert!(out.contains(&format!("  output:  {}\n", object.join("out").display())), "{out}");
    assert!(out.contains("    table  (6 bytes, blake3 "), "{out}");
    assert!(out.contains(&format!("  log:     {}\n", object.join("log.txt").display())), "{out}");
    assert!(out.contains("  param:   inputs = {raw: \"data/raw.csv\"}\n"), "{out}");

    let out = stdout(&show(&["fit"]));
    assert!(out.contains("fit[params.n=1] (shell)") && out.contains("fit[params.n=2] (shell)"), "{out}");
    assert!(out.contains("  param:   params = {n: 2}"), "{out}");
    let out = stdout(&show(&["fit[params.n=2]"]));
    assert!(out.starts_with("fit[params.n=2] (shell)") && !out.contains("fit[params.n=1]"), "{out}");
    let o = show(&["nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("`nosuch` is not a stage of"), "{}", stderr(&o));

    // An edit not yet run: status and show say why the instance is stale.
    p.edit("params  = {scale: 1}", "params  = {scale: 2}");
    let status = p.plan_of("status", &[]);
    assert_eq!(status[STATS].0, "will run");
    assert!(status[STATS].1.starts_with("params.scale changed from 1 to 2  [last ran "), "{:?}", status[STATS]);
    assert!(status[REPORT1].1.contains("if stats changes its output  [last ran "), "{:?}", status[REPORT1]);
    let out = stdout(&show(&["stats"]));
    assert!(out.contains("  state:   stale (params.scale changed from 1 to 2)"), "{out}");
    let out = stdout(&show(&["report"]));
    assert!(out.contains("  state:   waiting for stats"), "{out}");

    // Run, then go back: `stats` is confirmed from the store without running.
    p.run_ok(&[]);
    p.edit("params  = {scale: 2}", "params  = {scale: 1}");
    p.run_ok(&[]);
    assert_eq!(p.ran(), sorted(&[STATS, REPORT1, REPORT2]));
    let status = p.plan_of("status", &[]);
    assert!(status[STATS].1.starts_with("[last confirmed "), "{:?}", status[STATS]);

    // A stage never run.
    let text = fs::read_to_string(p.path("p.mg")).expect("read");
    p.write(
        "p.mg",
        &format!("{text}\nstage extra = shell {{\n  command = \"cp {{prep.table}} {{out.o}}\"\n  outputs = [o]\n}}\n"),
    );
    let status = p.plan_of("status", &[]);
    assert_eq!(status["extra"], ("will run".to_string(), "new  [never ran]".to_string()));
}

/// Edges of a rendered graph as (upstream name, downstream name).
fn graph_edges(out: &str, node: impl Fn(&str) -> Option<(String, String)>, arrow: &str) -> BTreeSet<(String, String)> {
    let names: BTreeMap<String, String> = out.lines().filter_map(|l| node(l.trim())).collect();
    out.lines()
        .filter_map(|l| l.trim().trim_end_matches(';').split_once(arrow))
        .map(|(a, b)| (names[a.trim()].clone(), names[b.trim()].clone()))
        .collect()
}

#[test]
fn graph_lists_every_instance_and_edge_as_dot_and_mermaid() {
    let p = Project::new("graph");
    p.write("data/raw.csv", "b\na\nc\n");
    p.pipeline(GRAPH);
    let expected: BTreeSet<(String, String)> = [
        (PREP, FIT1),
        (PREP, FIT2),
        (PREP, STATS),
        (FIT1, REPORT1),
        (STATS, REPORT1),
        (FIT2, REPORT2),
        (STATS, REPORT2),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();

    let o = p.on_pipeline("graph", &["--format", "dot"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dot = stdout(&o);
    assert!(dot.starts_with("digraph \"demo\" {"), "{dot}");
    let node = |l: &str| {
        let (id, rest) = l.split_once(" [label=\"")?;
        Some((id.to_string(), rest.split_once("\\nshell\"]")?.0.to_string()))
    };
    for name in ALL {
        assert!(dot.contains(&format!("[label=\"{name}\\nshell\"];")), "{name} missing from:\n{dot}");
    }
    assert_eq!(graph_edges(&dot, node, "->"), expected, "{dot}");

    let o = p.on_pipeline("graph", &["--format", "mermaid"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mermaid = stdout(&o);
    assert!(mermaid.starts_with("flowchart LR\n"), "{mermaid}");
    let node = |l: &str| {
        let (id, rest) = l.split_once("[\"")?;
        Some((id.to_string(), rest.split_once("<br/>")?.0.to_string()))
    };
    for name in ALL {
        assert!(mermaid.contains(&format!("[\"{name}<br/><i>shell</i>\"]")), "{name} missing from:\n{mermaid}");
    }
    assert_eq!(graph_edges(&mermaid, node, "-->"), expected, "{mermaid}");
    assert!(!p.log.exists(), "graph ran something");
}

// ---------------------------------------------------------------------------------------------
// Bugs found while writing these tests.

#[test]
fn a_relative_store_path_works() {
    let p = Project::new("relstore");
    p.pipeline("pipeline rel\n\nstage one = shell {\n  command = \"@LOG && echo x > {out.o}\"\n  outputs = [o]\n}\n");
    let o = p.medgen(&["run", "p.mg", "--store", "store"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(p.stored(), ["one"]);
}

#[test]
fn engine_commands_print_each_diagnostic_once() {
    let p = Project::new("diagtwice");
    p.pipeline(
        "pipeline twice\n\nstage one = shell {\n  command = \"echo x > {out.o}\"\n  outputs = [o]\n  bogus = 1\n}\n",
    );
    let check = p.medgen(&["check", "p.mg"]);
    assert_eq!(check.status.code(), Some(1));
    let code = stderr(&check).lines().find(|l| l.starts_with('E')).expect("an error code").trim().to_string();
    for cmd in ["plan", "run", "status", "graph"] {
        let o = p.on_pipeline(cmd, &[]);
        assert_eq!(o.status.code(), Some(1), "{cmd}");
        assert_eq!(stderr(&o).matches(&code).count(), 1, "medgen {cmd}:\n{}", stderr(&o));
    }
}

#[test]
fn a_failure_shows_the_log_tail_even_when_it_is_not_utf8() {
    let p = Project::new("tail");
    p.pipeline(
        r#"pipeline tail

# a Latin-1 byte in the output
stage latin = shell {
  command = "printf 'caf\\351\\n' >&2 && echo 'boom: latin error' >&2 && exit 1"
  outputs = [o]
}

# valid UTF-8, but 16 KiB from the end falls inside a two-byte character
stage long = shell {
  command = "yes 'ééééé' | head -n 3000 >&2 && echo 'boom: long error' >&2 && exit 1"
  outputs = [o]
}
"#,
    );
    let o = p.run(&["--keep-going"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("    | boom: latin error"), "{err}");
    assert!(err.contains("    | boom: long error"), "{err}");
}

#[test]
fn a_corrupt_output_is_reported_as_corrupt_even_when_its_stage_waits_for_a_job() {
    let p = graph_project("corruptwait");
    for instance in [FIT1, STATS] {
        for file in entries(&p.object_of(instance).join("out")) {
            fs::File::options().write(true).open(file).expect("open").set_len(0).expect("truncate");
        }
    }
    let err = p.run_ok(&["-j", "1"]);
    assert_eq!(p.ran(), [FIT1, STATS], "{err}");
    assert!(err.contains("run      fit[params.n=1]  (stored output is corrupt"), "{err}");
    assert!(err.contains("run      stats  (stored output is corrupt"), "{err}");
}

#[test]
fn an_entry_left_half_removed_is_recomputed() {
    let p = graph_project("halfremoved");
    // What `medgen gc` killed in the middle of removing the entry can leave behind.
    fs::remove_file(p.object_of(STATS).join("manifest.json")).expect("remove the manifest");
    let err = p.run_ok(&[]);
    assert_eq!(p.ran(), [STATS], "{err}");
}

#[test]
fn a_run_stopped_by_a_failure_says_how_to_run_the_rest() {
    let p = Project::new("hint");
    p.pipeline(FAILING);
    let o = p.run(&["-j", "1"]);
    let err = stderr(&o);
    assert!(err.contains("1 not started"), "{err}");
    assert!(err.contains("stopped after the first failure; `--keep-going` runs the stages"), "{err}");
}
