//! The checker's fuzz harness. Whatever bytes a pipeline file holds and whatever `--set` says,
//! `check` must answer in bounded time, without a panic, and every rejection must say where.
//!
//! The corpus is every example pipeline (`pipelines/*.mg`) and every language fixture
//! (`tests/fixtures/lang/**/*.mg`). Each mutant stacks one to three mutations on one of them,
//! at the byte level: bytes flipped, deleted or inserted (into invalid UTF-8 and NUL too),
//! tokens inserted (brackets, quotes, `..`, integers at and past the 64-bit limits, the one
//! overflowing division, Unicode, `use` of devices and of files that are not pipelines), lines
//! deleted, duplicated or swapped, a line made very long, a BOM put first, line endings turned
//! to CR or CRLF, names misspelt, hundreds of constants or stages that refer to each other in a
//! chain; and a quarter of the mutants get `--set` overrides built from the file's own names
//! and odd values. A seeded xorshift generator picks them, so every run tries the same mutants
//! and a failure is reproduced by running the test again.
//!
//! Each mutant is checked in-process as the file it came from (`check_bytes_at`, so `use` and
//! the paths it names resolve), inside `catch_unwind`, on worker threads that the test watches.
//! It passes when:
//! - the check does not panic, and takes less than [`CASE_LIMIT`];
//! - a rejected mutant has at least one error;
//! - every diagnostic has a span, except the one documented unspanned kind: E0003 for a root
//!   file that cannot be read or is not text (its message gives the line and byte);
//! - every diagnostic renders, with its `file:line:column` header, no line wider than
//!   [`MAX_RENDERED_WIDTH`], and no file reports more than [`MAX_SHOWN_PER_FILE`] + 1.
//!
//! The failures (at most [`MAX_REPORTED`]) are reported together, each with the mutations that
//! made it, its overrides and the path of a copy of the mutant.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use medgen_lang::check::{check_bytes_at, check_source, Report, MAX_SHOWN_PER_FILE};
use medgen_stdlib::StdRegistry;
use proptest::prelude::*;

/// Mutants checked per run: about ten seconds on two cores in a debug build.
const MUTANTS: usize = 8000;

/// Longest a single check may take; the slowest mutants (the long chains) take a few tenths.
const CASE_LIMIT: Duration = Duration::from_secs(2);

/// A check still running after this long is taken for a hang, and the test stops there.
const HANG_LIMIT: Duration = Duration::from_secs(20);

/// Widest rendered line: the message is wrapped at 100 columns, source lines cut at 200.
const MAX_RENDERED_WIDTH: usize = 300;

/// Most failures described in one report.
const MAX_REPORTED: usize = 10;

/// A small deterministic generator (xorshift64*), so every run tries the same mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Text inserted at a random place: syntax, limits of numbers, Unicode, line endings, paths.
const TOKENS: &[&str] = &[
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "..",
    ".",
    "=",
    ":",
    ",",
    "#",
    "-",
    "/",
    "*",
    "\\",
    "\n",
    "\r",
    "\r\n",
    "\t",
    "\0",
    "\u{feff}",
    "é",
    "日本",
    "🦀",
    "\u{202e}",
    "stage ",
    "dataset ",
    "use ",
    "sweep ",
    " in ",
    "expect ",
    "none",
    "seed = ",
    "0",
    "-1",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "(0 - 9223372036854775807 - 1) / -1",
    "(0-9223372036854775807-1)/-1 * 2",
    "1e308",
    "1e309",
    "1e-320",
    "0.0",
    "brain.test",
    "{in.x}",
    "{out.y}",
    "{params.z}",
    "{a.b}",
    "\nuse \"/dev/zero\"\n",
    "\nuse \"/dev/urandom\"\n",
    "\nuse \"/etc/passwd\"\n",
    "\nuse \".\"\n",
    "\nuse \"../pipelines/quickstart.mg\"\n",
    "\nseed = brain.test\n",
];

/// Values of `--set` overrides.
const VALUES: &[&str] = &[
    "1",
    "-1",
    "0",
    "9223372036854775807",
    "99999999999999999999",
    "(0-9223372036854775807-1)/-1",
    "1e309",
    "2.5",
    "\"text\"",
    "true",
    "none",
    "[1, 2]",
    "{a: 1}",
    "brain.test",
    "vae.latent_channels",
    "ldm.lr",
    "..",
    "(",
    "",
    "é",
];

/// Byte ranges of tokens: words, numbers, strings and single punctuation bytes.
fn tokens(text: &[u8]) -> Vec<(usize, usize)> {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'.';
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let start = i;
        if word(text[i]) {
            while i < text.len() && word(text[i]) {
                i += 1;
            }
        } else if text[i] == b'"' {
            i += 1;
            while i < text.len() && text[i] != b'"' && text[i] != b'\n' {
                i += 1;
            }
            i = (i + 1).min(text.len());
        } else {
            i += 1;
            if text[start].is_ascii_whitespace() {
                continue;
            }
        }
        out.push((start, i));
    }
    out
}

/// Byte ranges of lines, each with its `\n`.
fn lines(text: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in text.iter().enumerate() {
        if *b == b'\n' {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < text.len() {
        out.push((start, text.len()));
    }
    out
}

fn splice(text: &[u8], range: (usize, usize), with: &[u8]) -> Vec<u8> {
    [&text[..range.0], with, &text[range.1..]].concat()
}

/// One mutation of `text`, and what it did.
fn mutate(text: &[u8], rng: &mut Rng) -> (Vec<u8>, &'static str) {
    let at = rng.below(text.len() + 1);
    let toks = tokens(text);
    let lns = lines(text);
    let tok = if toks.is_empty() { (at, at) } else { *rng.pick(&toks) };
    let line = if lns.is_empty() { (0, 0) } else { *rng.pick(&lns) };
    match rng.below(17) {
        0 if !text.is_empty() => {
            let mut out = text.to_vec();
            let i = rng.below(text.len());
            out[i] = match rng.below(3) {
                0 => out[i] ^ (1 << rng.below(8)),
                1 => 0xff,
                _ => rng.next() as u8,
            };
            (out, "flip a byte")
        }
        1 => {
            let end = (at + 1 + rng.below(8)).min(text.len());
            (splice(text, (at, end), b""), "delete bytes")
        }
        2 | 3 => (splice(text, (at, at), rng.pick(TOKENS).as_bytes()), "insert a token"),
        4 => {
            let copies = if rng.below(4) == 0 { 1 + rng.below(200) } else { 1 };
            let dup = text[line.0..line.1].repeat(copies);
            (splice(text, (line.0, line.0), &dup), "duplicate a line")
        }
        5 => (splice(text, line, b""), "delete a line"),
        6 if lns.len() > 1 => {
            let (a, b) = (line, *rng.pick(&lns));
            let (a, b) = if a.0 <= b.0 { (a, b) } else { (b, a) };
            if a.1 > b.0 {
                return (text.to_vec(), "unchanged");
            }
            let out = [&text[..a.0], &text[b.0..b.1], &text[a.1..b.0], &text[a.0..a.1], &text[b.1..]].concat();
            (out, "swap two lines")
        }
        7 => {
            let long: Vec<u8> = match rng.below(4) {
                0 => b" ".repeat(70_000 + rng.below(1000)),
                1 => b"x".repeat(70_000),
                2 => [b"[".as_slice(), &b"1, ".repeat(30_000), b"zz.y]"].concat(),
                _ => text[tok.0..tok.1].repeat(20_000),
            };
            (splice(text, (at, at), &long), "make a line very long")
        }
        8 => ([b"\xef\xbb\xbf".as_slice(), text].concat(), "put a BOM first"),
        9 => {
            let to: &[u8] = if rng.below(2) == 0 { b"\r" } else { b"\r\n" };
            let out = text.iter().flat_map(|b| if *b == b'\n' { to.to_vec() } else { vec![*b] }).collect();
            (out, "turn line endings to CR or CRLF")
        }
        10 if tok.1 > tok.0 && text[tok.0].is_ascii_digit() => {
            let huge: &[&str] = &["9223372036854775807", "9223372036854775808", "1e309", "0", "-1", "99999999"];
            (splice(text, tok, rng.pick(huge).as_bytes()), "replace a number")
        }
        11 if tok.1 > tok.0 + 2 && text[tok.0..tok.1].iter().all(u8::is_ascii_alphabetic) => {
            let mut out = text.to_vec();
            let i = tok.0 + 1 + rng.below(tok.1 - tok.0 - 1);
            out[i] = if out[i] == b'e' { b'a' } else { b'e' };
            (out, "misspell a name")
        }
        12 => (splice(text, tok, b""), "delete a token"),
        13 => {
            let copy = text[tok.0..tok.1].to_vec();
            (splice(text, (tok.1, tok.1), &[b" ".as_slice(), &copy].concat()), "duplicate a token")
        }
        14 => (splice(text, (tok.0, tok.0), b"zz"), "break a reference"),
        15 if rng.below(4) == 0 => {
            let n = 300 + rng.below(300);
            let chain: String = if rng.below(2) == 0 {
                (0..n).map(|i| format!("k{i} = [k{}]\n", i + 1)).collect()
            } else {
                (1..n).map(|i| format!("stage t{i} = shell(t{})\n", i - 1)).collect()
            };
            ([text, chain.as_bytes()].concat(), "append a long chain of references")
        }
        _ => (splice(text, (at, at), rng.pick(TOKENS).as_bytes()), "insert a token"),
    }
}

/// `--set` overrides made of names in `text` (stages, constants, parameters) and odd values.
fn overrides(text: &[u8], rng: &mut Rng) -> Vec<String> {
    let names: Vec<String> = tokens(text)
        .into_iter()
        .map(|(s, e)| String::from_utf8_lossy(&text[s..e]).into_owned())
        .filter(|t| t.starts_with(|c: char| c.is_ascii_alphabetic()))
        .collect();
    let mut name = || if names.is_empty() { "seed".to_string() } else { rng.pick(&names).clone() };
    let (stage, param, constant) = (name(), name(), name());
    (0..1 + rng.below(3))
        .map(|_| {
            let value = rng.pick(VALUES);
            match rng.below(5) {
                0 => format!("seed={value}"),
                1 => format!("{constant}={value}"),
                2 => format!("{stage}.{param}.x={value}"),
                3 => format!("{stage}{value}"),
                _ => format!("{stage}.{param}={value}"),
            }
        })
        .collect()
}

/// One mutant: where it came from, what was done, and what is checked.
struct Case {
    path: PathBuf,
    how: Vec<&'static str>,
    sets: Vec<String>,
    bytes: Vec<u8>,
}

fn corpus() -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("corpus directory readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "mg") {
                out.push(path);
            }
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir("pipelines")
        .expect("pipelines/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "mg"))
        .collect();
    walk(Path::new("tests/fixtures/lang"), &mut files);
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("corpus file readable"))).collect()
}

fn cases() -> Vec<Case> {
    let corpus = corpus();
    assert!(corpus.len() > 100, "corpus too small: {} files", corpus.len());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..MUTANTS)
        .map(|i| {
            let (path, original) = &corpus[i % corpus.len()];
            let mut bytes = original.clone();
            let mut how = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let (next, what) = mutate(&bytes, &mut rng);
                bytes = next;
                how.push(what);
            }
            let sets = if rng.below(4) == 0 { overrides(&bytes, &mut rng) } else { Vec::new() };
            Case { path: path.clone(), how, sets, bytes }
        })
        .collect()
}

/// What is wrong with a report, rendered as a user sees it; empty when nothing is.
fn problems(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    if report.pipeline.is_none() && !report.has_errors() {
        out.push("rejected without an error".to_string());
    }
    let mut per_file = std::collections::BTreeMap::new();
    for d in &report.diagnostics {
        let rendered = d.render(&report.sources, false);
        let Some(span) = d.span else {
            if d.code.id != "E0003" {
                out.push(format!("no place: {}: {}", d.code.id, d.message));
            }
            continue;
        };
        *per_file.entry(span.file).or_insert(0usize) += 1;
        let location = report.sources.location(span);
        if !rendered.contains(&format!("[{location}]")) {
            out.push(format!("no `[{location}]` in: {rendered}"));
        }
        if rendered.contains("Failed to read contents") {
            out.push(format!("source not shown: {rendered}"));
        }
        if let Some(wide) = rendered.lines().find(|l| l.chars().count() > MAX_RENDERED_WIDTH) {
            let start: String = wide.chars().take(200).collect();
            out.push(format!("a rendered line of {} characters: {start}", wide.chars().count()));
        }
    }
    if let Some((file, n)) = per_file.into_iter().find(|(_, n)| *n > MAX_SHOWN_PER_FILE + 1) {
        out.push(format!("{n} diagnostics for {}", report.sources.get(file).name));
    }
    out
}

/// Checks one case: whether it was rejected and how long it took, or why it failed.
fn run(case: &Case, registry: &StdRegistry) -> Result<(bool, Duration), String> {
    let start = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let report = check_bytes_at(&case.path, &case.bytes, &case.sets, registry);
        (report.has_errors(), problems(&report))
    }));
    let took = start.elapsed();
    match outcome {
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panicked: {message}"))
        }
        Ok((_, problems)) if !problems.is_empty() => Err(problems.join("\n")),
        Ok(_) if took > CASE_LIMIT => Err(format!("took {took:?}")),
        Ok((rejected, _)) => Ok((rejected, took)),
    }
}

/// Writes the mutant where it can be checked again by hand, and describes the failure.
fn describe(index: usize, case: &Case, why: &str) -> String {
    let copy = std::env::temp_dir().join(format!("medgen-mutant-{index}.mg"));
    let saved = match std::fs::write(&copy, &case.bytes) {
        Ok(()) => format!("saved as {}", copy.display()),
        Err(e) => format!("not saved: {e}"),
    };
    let why: String = why.chars().take(3000).collect();
    format!(
        "mutant {index} of {} ({}), {saved}, --set {:?}:\n{why}",
        case.path.display(),
        case.how.join(", "),
        case.sets
    )
}

enum Event {
    Started { worker: usize, index: usize },
    Finished { worker: usize, index: usize, result: Result<(bool, Duration), String> },
}

#[test]
fn mutants_never_crash_hang_or_go_unlocated() {
    let started = Instant::now();
    let cases = std::sync::Arc::new(cases());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let (tx, rx) = mpsc::channel();
    for worker in 0..workers {
        let (tx, cases) = (tx.clone(), cases.clone());
        std::thread::spawn(move || {
            let registry = StdRegistry::new();
            for index in (worker..cases.len()).step_by(workers) {
                if tx.send(Event::Started { worker, index }).is_err() {
                    return;
                }
                let result = run(&cases[index], &registry);
                if tx.send(Event::Finished { worker, index, result }).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut running: Vec<Option<(usize, Instant)>> = vec![None; workers];
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut rejected = 0;
    let mut slowest = Duration::ZERO;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Event::Started { worker, index }) => running[worker] = Some((index, Instant::now())),
            Ok(Event::Finished { worker, index, result }) => {
                running[worker] = None;
                checked += 1;
                match result {
                    Ok((was_rejected, took)) => {
                        rejected += usize::from(was_rejected);
                        slowest = slowest.max(took);
                    }
                    Err(why) => failures.push(describe(index, &cases[index], &why)),
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some((index, _)) = running.iter().flatten().find(|(_, since)| since.elapsed() > HANG_LIMIT) {
            let case = &cases[*index];
            panic!("{}", describe(*index, case, &format!("still running after {HANG_LIMIT:?}")));
        }
        if failures.len() >= MAX_REPORTED {
            break;
        }
    }
    println!(
        "{checked} mutants checked ({rejected} rejected) in {:.1?} on {workers} threads, the slowest in {slowest:.1?}",
        started.elapsed()
    );
    assert!(failures.is_empty(), "{} of {checked} mutants failed:\n\n{}", failures.len(), failures.join("\n\n"));
    assert_eq!(checked, cases.len(), "not every mutant was checked");
    // Most mutations break something; if few are rejected, the mutator or the checker is off.
    assert!(rejected * 2 > checked, "only {rejected} of {checked} mutants rejected");
}

/// Checks `text` on a worker thread: a panic, a hang or a problem fails the test.
fn check_bounded(name: &str, text: String) -> (bool, Vec<String>) {
    let (tx, rx) = mpsc::channel();
    let name = name.to_string();
    std::thread::spawn(move || {
        let report = check_source(&name, &text, &[], &StdRegistry::new());
        let _ = tx.send((report.has_errors(), problems(&report)));
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("check panicked or hung"))
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for text in [
        format!("pipeline p\nx = {}1{}\n", "[".repeat(100_000), "]".repeat(100_000)),
        format!("pipeline p\nx = 1{}\n", " + 1".repeat(100_000)),
        format!("pipeline p\nx = {}\n", "(".repeat(50_000)),
        "pipeline p\nx = \"unterminated\n".repeat(1000),
    ] {
        let (has_errors, problems) = check_bounded("deep.mg", text);
        assert!(has_errors);
        assert!(problems.is_empty(), "{problems:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_crashes_the_checker(text in "(pipeline|stage|dataset|sweep|expect|use|in|[a-z_]{1,6}|[0-9.e-]{1,4}|\"[a-z ]{0,4}\"?|[{}()\\[\\]=:,.#<>!+*/-]|\n| ){0,60}") {
        let (_, problems) = check_bounded("fuzz.mg", text);
        prop_assert!(problems.is_empty(), "{:?}", problems);
    }
}
