//! The progress display of `medgen run`: on a terminal, a bar for the whole run and a
//! spinner per running stage with its elapsed time and latest status; elsewhere (CI logs,
//! files, cluster jobs), one plain line per stage that ran, failed or was skipped, and a running
//! stage's latest status at most every [`LOG_STATUS_EVERY`] (`-v`: [`LOG_STATUS_EVERY_VERBOSE`]),
//! so a log shows that a long training is alive and where it is.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a log (not a terminal) gets a running stage's status.
const LOG_STATUS_EVERY: Duration = Duration::from_secs(30);
const LOG_STATUS_EVERY_VERBOSE: Duration = Duration::from_secs(5);

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use medgen_engine::schedule::{Event, Observer, Outcome};

pub struct Progress {
    bars: Option<Bars>,
    /// Whether to print cached instances too (`-v`).
    verbose: bool,
    /// Without bars: when each running stage's status was last printed.
    logged: Mutex<BTreeMap<String, Instant>>,
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    running: Mutex<BTreeMap<String, ProgressBar>>,
}

impl Progress {
    /// `terminal`: draw bars; otherwise print plain lines.
    pub fn new(total: usize, terminal: bool, verbose: bool) -> Progress {
        let bars = terminal.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let total_bar = multi.add(ProgressBar::new(total as u64));
            total_bar.set_style(
                ProgressStyle::with_template("{spinner} [{pos}/{len}] {wide_msg} {elapsed}").expect("valid template"),
            );
            total_bar.enable_steady_tick(Duration::from_millis(120));
            Bars { multi, total: total_bar, running: Mutex::new(BTreeMap::new()) }
        });
        Progress { bars, verbose, logged: Mutex::new(BTreeMap::new()) }
    }

    fn line(&self, text: String) {
        match &self.bars {
            Some(b) => b.multi.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// Clears the bars before the summary is printed.
    pub fn finish(&self) {
        if let Some(b) = &self.bars {
            b.total.finish_and_clear();
            let _ = b.multi.clear();
        }
    }
}

impl Observer for Progress {
    fn event(&self, event: Event) {
        match event {
            Event::Started { name, reasons } => {
                let why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                if self.verbose || self.bars.is_none() {
                    self.line(format!("run      {name}  ({})", why.join("; ")));
                }
                if let Some(b) = &self.bars {
                    let bar = b.multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("  {spinner} {prefix} {wide_msg} {elapsed}")
                            .expect("valid template"),
                    );
                    bar.set_prefix(name.clone());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    b.running.lock().expect("progress lock").insert(name, bar);
                }
            }
            Event::Status { name, line } => match &self.bars {
                Some(b) => {
                    if let Some(bar) = b.running.lock().expect("progress lock").get(&name) {
                        bar.set_message(line);
                    }
                }
                None => {
                    let every = if self.verbose { LOG_STATUS_EVERY_VERBOSE } else { LOG_STATUS_EVERY };
                    let mut logged = self.logged.lock().expect("progress lock");
                    let due = logged.get(&name).is_none_or(|last| last.elapsed() >= every);
                    if due {
                        logged.insert(name.clone(), Instant::now());
                        self.line(format!("         {name}  {line}"));
                    }
                }
            },
            Event::Finished { name, outcome } => {
                self.logged.lock().expect("progress lock").remove(&name);
                if let Some(b) = &self.bars {
                    if let Some(bar) = b.running.lock().expect("progress lock").remove(&name) {
                        bar.finish_and_clear();
                        b.multi.remove(&bar);
                    }
                    b.total.inc(1);
                    b.total.set_message(name.clone());
                }
                let text = match &outcome {
                    Outcome::Cached if !self.verbose => return,
                    Outcome::Cached => format!("cached   {name}"),
                    Outcome::Ran { seconds } => format!("ran      {name}  ({})", duration(*seconds)),
                    Outcome::Failed { error } => {
                        format!("FAILED   {name}: {}", error.lines().next().unwrap_or_default())
                    }
                    Outcome::Skipped { because } => format!("skipped  {name}: {because}"),
                    Outcome::Cancelled => format!("cancelled {name}"),
                    Outcome::NotStarted => return,
                };
                self.line(text);
            }
        }
    }
}

/// `0.4s`, `12.3s`, `4m05s`, `2h03m`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        _ if seconds < 60.0 => format!("{seconds:.1}s"),
        _ if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}
