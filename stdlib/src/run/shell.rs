//! Running a `shell` stage: the command, with its placeholders replaced by shell-quoted paths
//! and values, runs under `/bin/sh -c` in a fresh, empty working directory, with a clean
//! environment:
//!
//! | variable | value |
//! |---|---|
//! | `PATH`, `HOME` | inherited |
//! | `LANG`, `LC_ALL` | `C.UTF-8` |
//! | `TZ` | `UTC` |
//! | `TMPDIR` | the working directory |
//! | `MEDGEN_STAGE` | the instance's name |
//! | `MEDGEN_OUT` | the directory the `{out.X}` files go to |
//! | `MEDGEN_WORK` | a directory kept across attempts (for checkpoints) |
//!
//! Nothing else is inherited, so a run does not depend on the caller's shell. Every declared
//! input is linked into the working directory at its path relative to the pipeline file, so
//! `python3 prep.py` finds `prep.py` when `inputs` declares it — and only declared files are
//! there: a command that reads an undeclared file fails instead of silently depending on it.
//! `{in.X}` is replaced by that relative path. The command's
//! stdout and stderr go to the stage's log. It fails when the exit status is not 0, when a
//! declared output was not written, or when declared metrics are not in `{out.metrics}`.
//! An interruption sends SIGTERM to the command's process group, then SIGKILL.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use medgen_engine::runner::{Outcome, RunContext, StageError};
use medgen_lang::value::Float;

use super::Run;
use crate::stages::ShellConfig;

/// Lines of the log shown when a command fails.
const LOG_TAIL_LINES: usize = 20;

/// How long a command has to exit after SIGTERM before it gets SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

pub struct Shell;

impl Run for Shell {
    type Config = ShellConfig;

    fn version(&self) -> u32 {
        1
    }

    fn run(&self, cx: &RunContext<'_>, config: ShellConfig) -> Result<Outcome, StageError> {
        link_inputs(cx, &config)?;
        let command = substitute(cx, &config)?;
        tracing::debug!(stage = %cx.instance.name, %command, "running");
        let log = std::fs::File::create(&cx.log_path).map_err(|e| failed("cannot create the log", e))?;
        let log_err = log.try_clone().map_err(|e| failed("cannot open the log", e))?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&command)
            .current_dir(&cx.scratch_dir)
            .env_clear()
            .envs(["PATH", "HOME"].iter().filter_map(|k| std::env::var_os(k).map(|v| (*k, v))))
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .env("TZ", "UTC")
            .env("TMPDIR", &cx.scratch_dir)
            .env("MEDGEN_STAGE", &cx.instance.name)
            .env("MEDGEN_OUT", &cx.out_dir)
            .env("MEDGEN_WORK", &cx.work_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child when the
        // thread that spawned it exits, so a killed `medgen` leaves no command running.
        #[cfg(target_os = "linux")]
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| failed("cannot start /bin/sh", e))?;
        let _watcher = Watcher::start(child.id()).map_err(|e| failed("cannot start the process watcher", e))?;
        let started = Instant::now();
        // Poll quickly at first (most commands are short), then back off to a few checks a second.
        let mut pause = Duration::from_millis(1);
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| failed("cannot wait for the command", e))? {
                break status;
            }
            if cx.cancel.load(Ordering::Relaxed) {
                terminate(&mut child);
                return Err(StageError::Cancelled);
            }
            (cx.progress)(format!("running for {}s", started.elapsed().as_secs()));
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        };
        if !status.success() {
            let what = match status.code() {
                Some(code) => format!("the command exited with status {code}"),
                None => "the command was killed by a signal".to_string(),
            };
            return Err(StageError::Failed(format!("{what}\n  command: {command}{}", tail(&cx.log_path))));
        }
        for name in &config.outputs {
            if !cx.out_dir.join(name).exists() {
                return Err(StageError::Failed(format!(
                    "the command did not write its declared output `{name}` ({{out.{name}}}){}",
                    tail(&cx.log_path)
                )));
            }
        }
        let metrics = read_metrics(&cx.out_dir, &config.metrics)?;
        Ok(Outcome { metrics })
    }
}

/// Links each declared input into the working directory under its relative path.
fn link_inputs(cx: &RunContext<'_>, config: &ShellConfig) -> Result<(), StageError> {
    for file in config.inputs.values() {
        let rel = Path::new(file.written(cx)?);
        let inside = rel.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(StageError::Failed(format!(
                "input `{}` must be a path inside the pipeline's directory (no `..`, not absolute)",
                rel.display()
            )));
        }
        let link = cx.scratch_dir.join(rel);
        if link.exists() {
            continue;
        }
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(|e| failed("cannot prepare the working directory", e))?;
        }
        std::os::unix::fs::symlink(file.path(cx)?, &link).map_err(|e| failed("cannot link an input", e))?;
    }
    Ok(())
}

fn failed(what: &str, e: std::io::Error) -> StageError {
    StageError::Failed(format!("{what}: {e}"))
}

/// Kills a command's whole process group if `medgen` dies while it runs. `PR_SET_PDEATHSIG`
/// reaches only the shell, not what it started; so a small watcher process waits on a pipe
/// whose only writer is this process. When `medgen` exits in any way, even by SIGKILL, the
/// kernel closes the pipe, the watcher's `read` ends, and it kills the group. A command that
/// finishes normally drops the watcher, which is killed before it acts.
struct Watcher {
    process: std::process::Child,
    _writer: std::io::PipeWriter,
}

impl Watcher {
    fn start(group: u32) -> std::io::Result<Watcher> {
        let (reader, writer) = std::io::pipe()?;
        let process = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("read _ ; kill -s KILL -- -{group} 2>/dev/null"))
            .env_clear()
            .stdin(reader)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(Watcher { process, _writer: writer })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// SIGTERM to the command's process group, then SIGKILL if it lingers.
fn terminate(child: &mut std::process::Child) {
    let group = -(child.id() as i32);
    // SAFETY: signalling our own child's process group.
    unsafe { libc::kill(group, libc::SIGTERM) };
    let deadline = Instant::now() + TERM_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(group, libc::SIGKILL) };
    let _ = child.wait();
}

/// Replaces `{in.X}`, `{params.X}`, `{out.X}` and `{STAGE.X}` with shell-quoted text.
fn substitute(cx: &RunContext<'_>, config: &ShellConfig) -> Result<String, StageError> {
    let template = config.command.as_str();
    let mut out = String::with_capacity(template.len());
    let mut last = 0;
    for (start, end, scope, name) in medgen_lang::check::placeholders(template) {
        out.push_str(&template[last..start]);
        last = end;
        let text = match scope {
            "in" => config.inputs.get(name).map(|f| f.written(cx).map(str::to_string)).transpose()?,
            "params" => config.params.get(name).map(scalar_text),
            "out" => Some(cx.out_dir.join(name).display().to_string()),
            stage => cx.placeholders.get(stage).map(|dir| dir.join(name).display().to_string()),
        };
        let text = text.ok_or_else(|| StageError::Failed(format!("placeholder {{{scope}.{name}}} has no value")))?;
        out.push_str(&quote(&text));
    }
    out.push_str(&template[last..]);
    Ok(out)
}

/// A value as the pipeline writes it (`1e-4`, not `0.0001`), strings without quotes.
fn scalar_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => Float(n.as_f64().unwrap_or(f64::NAN)).to_string(),
        },
        other => other.to_string(),
    }
}

/// Quotes for `sh` unless the text is made only of characters that need none.
fn quote(text: &str) -> String {
    let plain = !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The last lines of the log, indented, for an error message.
fn tail(log: &Path) -> String {
    let Ok(mut f) = std::fs::File::open(log) else { return String::new() };
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut bytes = Vec::new();
    let _ = f.read_to_end(&mut bytes);
    // Logs are whatever the command printed: show what is not UTF-8 as replacement characters.
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let shown = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    format!(
        "\n  last lines of its output:\n{}",
        shown.iter().map(|l| format!("    | {l}")).collect::<Vec<_>>().join("\n")
    )
}

/// Reads declared metrics from `{out.metrics}`, a JSON object of numbers.
fn read_metrics(out: &Path, names: &[String]) -> Result<BTreeMap<String, f64>, StageError> {
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    let path = out.join("metrics");
    let text = std::fs::read_to_string(&path).map_err(|e| failed("cannot read {out.metrics}", e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| StageError::Failed(format!("{{out.metrics}} is not a JSON object of numbers: {e}")))?;
    names
        .iter()
        .map(|n| match json.get(n).and_then(serde_json::Value::as_f64) {
            Some(v) => Ok((n.clone(), v)),
            None => Err(StageError::Failed(format!("{{out.metrics}} has no number `{n}`"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoting_leaves_plain_words_and_protects_the_rest() {
        assert_eq!(quote("data/raw.csv"), "data/raw.csv");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }
}
