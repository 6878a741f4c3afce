//! Whatever it is given, the checker answers in bounded time, memory and output, without a
//! panic, and says where: arithmetic that overflows, files that are devices, FIFOs, too large
//! or not text, diagnostics on lines far wider than a terminal, files with thousands of
//! problems, and the line endings and byte order marks of other systems. A file that is not a
//! pipeline is never shown. These are the checker's own rules, so a registry without stage
//! kinds is enough; `tests/mutations.rs` fuzzes the same properties with the real stage kinds.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use medgen_lang::check::{check_bytes_at, check_file, check_source, Report, MAX_FILE_BYTES, MAX_SHOWN_PER_FILE};
use medgen_lang::diagnostic::Code;
use medgen_lang::signature::{Registry, StageKind};

/// A registry without stage kinds: constants, `use` and arithmetic are all these tests need.
struct NoKinds;

impl Registry for NoKinds {
    fn kind(&self, _: &str) -> Option<&dyn StageKind> {
        None
    }

    fn kinds(&self) -> Vec<&dyn StageKind> {
        Vec::new()
    }

    fn codes(&self) -> Vec<&'static Code> {
        Vec::new()
    }
}

/// What a user sees of a report: every diagnostic rendered, codes, and whether it failed.
struct Seen {
    codes: Vec<&'static str>,
    text: String,
    has_errors: bool,
}

fn seen(report: &Report) -> Seen {
    let text = report
        .diagnostics
        .iter()
        .map(|d| match d.span {
            Some(_) => d.render(&report.sources, false),
            None => format!("{}: {}\n", d.code.id, d.message),
        })
        .collect();
    Seen { codes: report.diagnostics.iter().map(|d| d.code.id).collect(), text, has_errors: report.has_errors() }
}

/// Runs `f` on a worker thread: a panic or more than 10 s fails the test, naming `what`.
fn bounded(what: &str, f: impl FnOnce() -> Report + Send + 'static) -> Seen {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(seen(&f()));
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("checking {what} panicked or hung"))
}

fn source(text: impl Into<String>, sets: &[&str]) -> Seen {
    let text = text.into();
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    bounded("a source", move || check_source("t.mg", &text, &sets, &NoKinds))
}

fn file(path: &Path) -> Seen {
    let path = path.to_path_buf();
    bounded(&path.display().to_string(), move || check_file(&path, &[], &NoKinds))
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medgen-bounded-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}

#[test]
fn integer_division_and_remainder_overflow_is_an_error() {
    let min = "(0 - 9223372036854775807 - 1)";
    for text in [format!("pipeline p\nx = {min} / -1\n"), format!("pipeline p\nx = 2 * ({min} / -1)\n")] {
        let s = source(text, &[]);
        assert!(s.codes.contains(&"E0029"), "{}", s.text);
        assert!(s.text.contains("t.mg:2:"), "{}", s.text);
    }
    let s = source("pipeline p\nx = 1\ny = x\n", &[&format!("x={min}/-1")]);
    assert!(s.codes.contains(&"E0029"), "{}", s.text);
    assert!(s.text.contains("--set:1:"), "{}", s.text);
}

#[test]
fn a_diagnostic_far_right_on_a_long_line_renders_short_with_its_real_column() {
    for pad in [70_000, 1_000_000] {
        let s = source(format!("pipeline p\n{}x = a.b\n", " ".repeat(pad)), &[]);
        let start: String = s.text.chars().take(2000).collect();
        assert!(s.codes.contains(&"E0012"), "{start}");
        assert!(s.text.contains(&format!("[t.mg:2:{}]", pad + 5)), "{start}");
        assert!(s.text.lines().all(|l| l.chars().count() < 300), "a rendered line is too wide");
    }
    let s = source(format!("pipeline p\nx = [{}a.b]\n", "1, ".repeat(100_000)), &[]);
    assert!(s.text.len() < 4000, "{} bytes rendered", s.text.len());
}

#[test]
fn a_record_with_thousands_of_problems_prints_a_bounded_report() {
    let s = source(format!("pipeline p\nx = {{{}}}\n", "f: a.b, ".repeat(100_000)), &[]);
    let shown = s.codes.iter().filter(|c| **c == "E0012").count();
    assert_eq!(shown, MAX_SHOWN_PER_FILE);
    assert!(s.codes.contains(&"W0002"), "{:?}", s.codes);
    assert!(
        s.text.contains("99951 more problems in this file are not shown (99950 errors, 1 warning)"),
        "{}",
        &s.text[..3000]
    );
    assert!(s.text.len() < 100_000, "{} bytes rendered", s.text.len());
    assert!(s.has_errors);

    // Warnings alone are capped too, and stay warnings.
    let many = (0..60).map(|i| format!("c{i} = 1\n")).collect::<String>();
    let s = source(format!("pipeline p\n{many}"), &[]);
    assert_eq!(s.codes.len(), MAX_SHOWN_PER_FILE + 1);
    assert!(!s.has_errors, "{}", s.text);
}

#[test]
fn devices_fifos_and_directories_are_refused_without_being_read() {
    let dir = scratch("special");
    std::fs::write(
        dir.join("p.mg"),
        "pipeline p\nuse \"/dev/zero\"\nuse \"/dev/urandom\"\nuse \"fifo.mg\"\nuse \"d.mg\"\n",
    )
    .expect("write");
    std::fs::create_dir(dir.join("d.mg")).expect("directory");
    let made = std::process::Command::new("mkfifo").arg(dir.join("fifo.mg")).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let s = file(&dir.join("p.mg"));
    assert_eq!(s.codes, ["E0003", "E0003", "E0003", "E0003"], "{}", s.text);
    for what in ["`/dev/zero`: it is a device", "`/dev/urandom`: it is a device", "`fifo.mg`: it is a FIFO"] {
        assert!(s.text.contains(&format!("cannot read {what}, not a regular file")), "{what}:\n{}", s.text);
    }
    assert!(s.text.contains("`d.mg`: it is a directory"), "{}", s.text);
    for root in ["fifo.mg", "d.mg"] {
        let s = file(&dir.join(root));
        assert_eq!(s.codes, ["E0003"], "{}", s.text);
    }
    let s = file(Path::new("/dev/zero"));
    assert!(s.text.contains("it is a device, not a regular file"), "{}", s.text);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn a_file_over_the_size_limit_is_refused() {
    let dir = scratch("large");
    let big = std::fs::File::create(dir.join("big.mg")).expect("create");
    big.set_len(MAX_FILE_BYTES as u64 + 1).expect("sparse file");
    std::fs::write(dir.join("p.mg"), "pipeline p\nuse \"big.mg\"\n").expect("write");
    for (path, expect) in [("big.mg", "cannot read `"), ("p.mg", "p.mg:2:5")] {
        let s = file(&dir.join(path));
        assert_eq!(s.codes, ["E0003"], "{}", s.text);
        assert!(s.text.contains("is larger than 16 MiB"), "{}", s.text);
        assert!(s.text.contains(expect), "{}", s.text);
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn text_that_is_not_utf8_or_holds_nul_is_located_and_not_shown() {
    let s = bounded("bytes", || check_bytes_at(Path::new("p.mg"), b"pipeline p\nx = \"caf\xe9\"\n", &[], &NoKinds));
    assert_eq!(s.codes, ["E0003"]);
    assert!(s.text.contains("`p.mg` is not a pipeline file: line 2, byte 9 is not UTF-8 text"), "{}", s.text);

    let dir = scratch("binary");
    std::fs::write(dir.join("latin1.mg"), b"x = \"caf\xe9\"\n").expect("write");
    std::fs::write(dir.join("nul.mg"), b"x = 1\ny = \"SECRET\0\"\n").expect("write");
    std::fs::write(dir.join("p.mg"), "pipeline p\nuse \"latin1.mg\"\nuse \"nul.mg\"\n").expect("write");
    let s = file(&dir.join("p.mg"));
    assert_eq!(s.codes, ["E0003", "E0003"], "{}", s.text);
    assert!(s.text.contains("`latin1.mg` is not a pipeline file: line 1, byte 9 is not UTF-8 text"), "{}", s.text);
    assert!(s.text.contains("`nul.mg` is not a pipeline file: line 2, byte 12 is a NUL byte"), "{}", s.text);
    assert!(s.text.contains("p.mg:3:5"), "{}", s.text);
    assert!(!s.text.contains("SECRET") && !s.text.contains("caf"), "{}", s.text);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn a_used_file_not_named_mg_is_not_read_or_shown() {
    let dir = scratch("shadow");
    std::fs::write(dir.join("shadow"), "root:$6$SECRETHASH:19000:0:99999:7:::\n").expect("write");
    std::fs::write(dir.join("p.mg"), "pipeline p\nuse \"shadow\"\nuse \"link.mg\"\n").expect("write");
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.join("shadow"), dir.join("link.mg")).expect("symlink");
    let s = file(&dir.join("p.mg"));
    assert_eq!(s.codes, ["E0003", "E0003"], "{}", s.text);
    assert!(s.text.contains("`shadow` is not a pipeline file: its name does not end in `.mg`"), "{}", s.text);
    assert!(s.text.contains("`link.mg` is not a pipeline file: it links to `"), "{}", s.text);
    assert!(s.text.contains("p.mg:2:5") && s.text.contains("p.mg:3:5"), "{}", s.text);
    assert!(!s.text.contains("SECRETHASH"), "{}", s.text);

    // A `.mg` file that does not parse is a pipeline the user wrote: it is shown.
    std::fs::write(dir.join("lib.mg"), "x = [\n").expect("write");
    std::fs::write(dir.join("p.mg"), "pipeline p\nuse \"lib.mg\"\n").expect("write");
    let s = file(&dir.join("p.mg"));
    assert_eq!(s.codes, ["E0001"], "{}", s.text);
    assert!(s.text.contains("lib.mg:2:1]"), "{}", s.text);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn a_byte_order_mark_is_dropped_and_positions_stay_right() {
    let s = source("\u{feff}pipeline p\nx = a.b\n", &[]);
    assert_eq!(s.codes, ["W0001", "E0012"], "{}", s.text);
    assert!(s.text.contains("[t.mg:2:5]"), "{}", s.text);
    let s = bounded("bytes", || check_bytes_at(Path::new("p.mg"), b"\xef\xbb\xbfpipeline p\n", &[], &NoKinds));
    assert!(s.codes.is_empty(), "{}", s.text);
}

#[test]
fn cr_and_crlf_line_endings_end_comments_and_count_lines() {
    for newline in ["\r", "\r\n", "\n"] {
        let text = ["pipeline p", "# a comment", "x = a.b  # another", "y = 1"].join(newline) + newline;
        let s = source(text, &[]);
        assert_eq!(s.codes, ["W0001", "E0012", "W0001"], "{newline:?}:\n{}", s.text);
        assert!(s.text.contains("[t.mg:3:5]"), "{newline:?}:\n{}", s.text);
        assert!(s.text.contains("[t.mg:4:1]"), "{newline:?}:\n{}", s.text);
    }
}

#[test]
fn long_chains_of_constants_and_declarations_do_not_overflow_the_stack() {
    let chain: String = (0..5000).map(|i| format!("c{i} = [c{}]\n", i + 1)).collect();
    let s = source(format!("pipeline p\n{chain}c5000 = 1\n"), &[]);
    assert!(s.codes.contains(&"E0002"), "{:?}", s.codes);
    assert!(s.text.contains("counting the constants it refers to"), "{}", s.text);

    // Declarations are ordered upstream first; a chain of them is as long as the file.
    let stages: String = (1..20_000).map(|i| format!("stage s{i} = x(s{})\n", i - 1)).collect();
    let s = source(format!("pipeline p\nstage s0 = x()\n{stages}"), &[]);
    assert!(s.codes.iter().all(|c| *c == "E0010" || *c == "W0002"), "{:?}", s.codes);
    let s = source(format!("pipeline p\nstage s0 = x(s19999)\n{stages}"), &[]);
    assert_eq!(s.codes, ["E0014"], "{}", s.text);
}
