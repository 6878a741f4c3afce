//! Robustness of `check` on broken input: hundreds of mutations of every example pipeline —
//! characters and tokens deleted, duplicated and swapped, names misspelt, values pushed out
//! of range, references broken — must never crash or hang the checker, and every rejection
//! must name a line and a column. Arbitrary text (proptest) must not crash the parser either.

use std::sync::mpsc;
use std::time::Duration;

use medgen_lang::check::check_source;
use medgen_stdlib::StdRegistry;
use proptest::prelude::*;

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
}

/// Byte ranges of tokens: words, numbers, strings and single punctuation characters.
fn tokens(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.') {
                i += 1;
            }
        } else if c == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                i += 1;
            }
            i = (i + 1).min(bytes.len());
        } else if c.is_ascii_whitespace() {
            i += 1;
            continue;
        } else {
            i += 1;
        }
        out.push((start, i));
    }
    out
}

fn mutate(text: &str, rng: &mut Rng) -> (String, &'static str) {
    let toks = tokens(text);
    let (s, e) = toks[rng.below(toks.len())];
    let (s2, e2) = toks[rng.below(toks.len())];
    let byte = rng.below(text.len());
    let at = (0..=byte).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    let next = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
    let tok = &text[s..e];
    match rng.below(10) {
        0 => (format!("{}{}", &text[..at], &text[next..]), "delete a character"),
        1 => (format!("{}{}", &text[..next], &text[at..]), "duplicate a character"),
        2 => {
            let after = text[next..].chars().next().map_or(next, |c| next + c.len_utf8());
            (format!("{}{}{}{}", &text[..at], &text[next..after], &text[at..next], &text[after..]), "swap characters")
        }
        3 => (format!("{}{}", &text[..s], &text[e..]), "delete a token"),
        4 => (format!("{}{} {}", &text[..e], " ", &text[s..]), "duplicate a token"),
        5 if s2 > e => {
            (format!("{}{}{}{}{}", &text[..s], &text[s2..e2], &text[e..s2], tok, &text[e2..]), "swap two tokens")
        }
        6 if tok.len() > 2 && tok.chars().all(|c| c.is_ascii_alphabetic() || c == '_') => {
            let mut chars: Vec<char> = tok.chars().collect();
            let i = 1 + rng.below(chars.len() - 1);
            chars[i] = if chars[i] == 'e' { 'a' } else { 'e' };
            (format!("{}{}{}", &text[..s], chars.into_iter().collect::<String>(), &text[e..]), "misspell a name")
        }
        7 => {
            let number =
                toks.iter().filter(|(a, b)| text[*a..*b].starts_with(|c: char| c.is_ascii_digit())).nth(rng.below(8));
            let replacement = ["-1", "0", "99999999", "1e300", "0.0", "-3.5"][rng.below(6)];
            match number {
                Some((a, b)) => (format!("{}{}{}", &text[..*a], replacement, &text[*b..]), "push a value out of range"),
                None => (text.to_string(), "unchanged"),
            }
        }
        8 if tok.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') => {
            (format!("{}zz{}{}", &text[..s], tok, &text[e..]), "break a reference")
        }
        _ => {
            let junk =
                ["{", "}", "[", "]", "(", ")", "=", ":", ",", "#", "\"", "-", "*", ".", "stage", "\n"][rng.below(16)];
            (format!("{}{}{}", &text[..at], junk, &text[at..]), "insert a stray token")
        }
    }
}

/// Checks `text` on a worker thread; fails the test if it panics or takes more than 10 s.
fn check_bounded(name: &str, text: String) -> (bool, Vec<String>) {
    let (tx, rx) = mpsc::channel();
    let name = name.to_string();
    std::thread::spawn(move || {
        let report = check_source(&name, &text, &[], &StdRegistry::new());
        let problems: Vec<String> = report
            .diagnostics
            .iter()
            .filter_map(|d| {
                let rendered = d.render(&report.sources, false);
                let Some(span) = d.span else { return Some(format!("no place: {}", d.message)) };
                let location = report.sources.location(span);
                (!rendered.contains(&format!("[{location}]"))).then(|| format!("no line:column in: {rendered}"))
            })
            .collect();
        let _ = tx.send((report.has_errors(), problems));
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("check panicked or hung"))
}

#[test]
fn mutated_examples_never_crash_or_hang_and_errors_have_places() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut files: Vec<_> =
        std::fs::read_dir("pipelines").expect("pipelines/").map(|e| e.expect("entry").path()).collect();
    files.sort();
    let mut rejected = 0;
    let mut tried = 0;
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "mg")) {
        let text = std::fs::read_to_string(path).expect("example readable");
        for _ in 0..120 {
            let (mutant, how) = mutate(&text, &mut rng);
            let (has_errors, problems) = check_bounded("mutant.mg", mutant.clone());
            assert!(problems.is_empty(), "{how} in {}:\n{mutant}\n{problems:?}", path.display());
            rejected += usize::from(has_errors);
            tried += 1;
        }
    }
    assert!(tried >= 500, "only {tried} mutations tried");
    // Most mutations break something; if few are rejected, the mutator or the checker is off.
    assert!(rejected * 2 > tried, "only {rejected} of {tried} mutations rejected");
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
