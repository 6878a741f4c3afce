//! The canonical formatter: layout rules on small cases, and over every pipeline of the
//! repository and random pipelines, that formatting is idempotent, keeps the syntax tree
//! (spans aside) and loses no comment.

use std::path::{Path, PathBuf};

use medgen_lang::format::format_source;
use medgen_lang::source::FileId;
use medgen_lang::syntax::parse_file;
use proptest::prelude::*;

fn fmt(text: &str) -> String {
    match format_source(text) {
        Ok(out) => out,
        Err(diags) => panic!("cannot format:\n{text}\n{diags:?}"),
    }
}

/// The items of a file, printed without their spans.
fn shape(text: &str) -> String {
    let (file, diags) = parse_file(FileId(0), text);
    assert!(diags.is_empty(), "does not parse:\n{text}\n{diags:?}");
    strip_spans(&format!("{:?}", file.items))
}

/// Removes every `Span { .. }` from a `Debug` rendering.
fn strip_spans(debug: &str) -> String {
    let mut out = String::with_capacity(debug.len());
    let mut rest = debug;
    while let Some(at) = rest.find("Span { ") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find(" }").expect("a span closes");
        rest = &rest[at + end + 2..];
    }
    out.push_str(rest);
    out
}

/// The comments of a file, sorted.
fn comments(text: &str) -> Vec<String> {
    let mut texts: Vec<_> = parse_file(FileId(0), text).0.comments.into_iter().map(|c| c.text).collect();
    texts.sort();
    texts
}

/// Formats `text` and checks what must hold of any formatting; returns the output.
fn check_invariants(text: &str) -> String {
    let once = fmt(text);
    assert_eq!(fmt(&once), once, "not idempotent; input:\n{text}");
    assert_eq!(shape(&once), shape(text), "tree changed; output:\n{once}");
    assert_eq!(comments(&once), comments(text), "comments changed; output:\n{once}");
    assert!(once.is_empty() || (once.ends_with('\n') && !once.ends_with("\n\n")));
    assert!(!once.starts_with('\n'));
    once
}

#[track_caller]
fn assert_formats(input: &str, expected: &str) {
    assert_eq!(check_invariants(input), expected);
}

#[test]
fn aligns_assignments_within_runs() {
    assert_formats(
        "pipeline p\nstage s = k {\n  a = 1\n  longer_name = 2\n  b=3\n\n  c = 4\n  dd = 5\n  sweep a in [1,2]\n  e = 6\n}\n",
        "pipeline p\n\nstage s = k {\n  a           = 1\n  longer_name = 2\n  b           = 3\n\n  c  = 4\n  dd = 5\n  sweep a in [1, 2]\n  e = 6\n}\n",
    );
}

#[test]
fn comment_lines_end_alignment_runs_and_trailing_comments_do_not() {
    assert_formats(
        "stage s = k {\n  a = 1 # first\n  bbb = 2\n  # about c\n  c = 3\n  dddd = 4\n}\n",
        "stage s = k {\n  a   = 1  # first\n  bbb = 2\n  # about c\n  c    = 3\n  dddd = 4\n}\n",
    );
}

#[test]
fn collapses_blank_lines() {
    assert_formats(
        "\n\n\npipeline p\n\n\n\nx = 1\ny = 2\n\n\n\n\nz = 3\n\n\n",
        "pipeline p\n\nx = 1\ny = 2\n\nz = 3\n",
    );
}

#[test]
fn blank_lines_inside_blocks_are_kept_but_not_at_the_edges() {
    assert_formats("stage s = k {\n\n\n  a = 1\n\n\n\n  b = 2\n\n}\n", "stage s = k {\n  a = 1\n\n  b = 2\n}\n");
}

#[test]
fn separates_declarations_with_blocks() {
    assert_formats(
        "pipeline p\ndataset d = phantom { n = 4 }\nstage a = k(d)\nstage b = k(a) {}\nx = 1\n",
        "pipeline p\n\ndataset d = phantom {\n  n = 4\n}\n\nstage a = k(d)\n\nstage b = k(a) {}\n\nx = 1\n",
    );
}

#[test]
fn blank_line_before_a_block_declaration_goes_above_its_comments() {
    assert_formats(
        "x = 1\n# the stage\nstage s = k {\n  a = 1\n}\n# after\n",
        "x = 1\n\n# the stage\nstage s = k {\n  a = 1\n}\n\n# after\n",
    );
}

#[test]
fn prints_values_as_written() {
    assert_formats(
        "x = -(1_000 + 2e-4)*3 / y.z\ns = \"a \\\"q\\\" \\n\"\nr = {a: true, b: none, c: {}}\nc = f( 1 , k : [ ] , )\nuse \"lib\\\\x.mg\"\n",
        "x = -(1_000 + 2e-4) * 3 / y.z\ns = \"a \\\"q\\\" \\n\"\nr = {a: true, b: none, c: {}}\nc = f(1, k: [])\nuse \"lib\\\\x.mg\"\n",
    );
}

#[test]
fn keeps_trailing_comments_on_their_line() {
    assert_formats(
        "pipeline p # the name\nx = 1    # note\nstage s = k(x) {   # opens\n  a = 1 # one\n}   # closes\n",
        "pipeline p  # the name\nx = 1       # note\n\nstage s = k(x) {  # opens\n  a = 1           # one\n}                 # closes\n",
    );
}

#[test]
fn aligns_trailing_comments_of_consecutive_lines_only() {
    assert_formats(
        "pipeline p\ndataset d = phantom {\n  shape = [8, 16, 16] # d, h, w\n  spacing = [1.0, 1.0, 1.0] # mm\n  volumes = 4\n  seed = 1 # alone\n}\n",
        "pipeline p\n\ndataset d = phantom {\n  shape   = [8, 16, 16]      # d, h, w\n  spacing = [1.0, 1.0, 1.0]  # mm\n  volumes = 4\n  seed    = 1  # alone\n}\n",
    );
}

#[test]
fn comments_inside_a_list_break_it() {
    assert_formats(
        "x = [1, # one\n  # before two\n  2,\n  3 # three\n  # at the end\n]\ny = [ # opening\n 4]\n",
        "x = [\n  1,  # one\n  # before two\n  2,\n  3,  # three\n  # at the end\n]\ny = [  # opening\n  4,\n]\n",
    );
}

#[test]
fn a_comment_in_an_inner_container_breaks_the_outer_ones() {
    assert_formats(
        "stage s = k(f(a: [1, 2], b: {c: 1, # c\n d: 2})) {\n  e = 1\n}\n",
        "stage s = k(\n  f(\n    a: [1, 2],\n    b: {\n      c: 1,  # c\n      d: 2,\n    },\n  ),\n) {\n  e = 1\n}\n",
    );
}

#[test]
fn comments_in_empty_containers_and_blocks() {
    assert_formats(
        "x = f( # nothing yet\n)\nstage s = k {\n  # later\n}\n",
        "x = f(  # nothing yet\n)\n\nstage s = k {\n  # later\n}\n",
    );
}

#[test]
fn a_comment_outside_all_brackets_moves_above_its_line() {
    assert_formats(
        "x = 1\n\ny = # why\n  2\nstage s = k # kind\n(x) {\n  z = 1 + # half\n  2\n}\n",
        "x = 1\n\n# why\ny = 2\n\n# kind\nstage s = k(x) {\n  # half\n  z = 1 + 2\n}\n",
    );
}

#[test]
fn breaks_long_lists_and_keeps_short_inner_ones_flat() {
    let items: Vec<String> = (0..30).map(|i| format!("item_{i}")).collect();
    let input = format!("x = [{}]\ny = [[1, 2], [{}]]\n", items[..3].join(", "), items.join(", "));
    let broken: String = items.iter().map(|i| format!("    {i},\n")).collect();
    let expected = format!("x = [item_0, item_1, item_2]\ny = [\n  [1, 2],\n  [\n{broken}  ],\n]\n");
    assert_formats(&input, &expected);
}

#[test]
fn breaks_at_the_width_limit() {
    let fits = format!("x = [{}]", "a, ".repeat(31) + "b");
    assert_eq!(fits.len(), 100);
    assert_formats(&format!("{fits}\n"), &format!("{fits}\n"));
    let long = format!("x = [{}]\n", "a, ".repeat(31) + "bc");
    let out = check_invariants(&long);
    assert!(out.starts_with("x = [\n  a,\n"), "{out}");
    assert!(out.ends_with("  bc,\n]\n"), "{out}");
}

#[test]
fn arguments_count_the_block_opening_as_part_of_their_line() {
    let args = format!("{}bb", "a, ".repeat(28));
    let flat = format!("stage s = k({args})");
    assert_eq!(flat.len(), 99);
    assert_formats(&format!("{flat}\n"), &format!("{flat}\n"));
    let out = check_invariants(&format!("{flat} {{\n  x = 1\n}}\n"));
    assert!(out.starts_with("stage s = k(\n  a,\n"), "{out}");
    assert!(out.contains("  bb,\n) {\n  x = 1\n}\n"), "{out}");
}

#[test]
fn empty_and_comment_only_files() {
    assert_formats("", "");
    assert_formats("\n\n  \n", "");
    assert_formats("\n\n# only\n\n\n# comments\n\n", "# only\n\n# comments\n");
}

#[test]
fn refuses_files_with_syntax_errors() {
    for text in ["pipeline p\nstage s = k(\nx = 1\n", "pipeline\n", "x = [1, 2\n# c\n", "x = 99999999999999999999\n"] {
        let diags = format_source(text).expect_err(text);
        assert!(!diags.is_empty());
    }
}

fn mg_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            mg_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "mg") {
            out.push(path);
        }
    }
}

#[test]
fn repository_pipelines_format_idempotently() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    mg_files(&root.join("pipelines"), &mut files);
    mg_files(&root.join("tests").join("fixtures"), &mut files);
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if format_source(&text).is_ok() {
            check_invariants(&text);
        }
    }
}

const KEYWORDS: &[&str] = &["pipeline", "use", "dataset", "stage", "sweep", "expect", "in", "true", "false", "none"];

fn ident() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_]{0,7}".prop_filter("not a keyword", |s| !KEYWORDS.contains(&s.as_str()))
}

fn comment() -> impl Strategy<Value = String> {
    "#[ a-z0-9#\"\\[\\]{}(),=]{0,20}"
}

fn maybe_comment() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(0.3, comment())
}

/// A string literal, escapes and `#` included.
fn string() -> impl Strategy<Value = String> {
    let piece = prop_oneof!["[ a-z#{}]", Just("\\n".to_string()), Just("\\\"".to_string()), Just("\\\\".to_string())];
    prop::collection::vec(piece, 0..6).prop_map(|p| format!("\"{}\"", p.concat()))
}

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,6}",
        "[0-9]{1,3}_[0-9]{3}",
        "[0-9]{1,3}\\.[0-9]{1,3}",
        "[0-9]e-[0-9]",
        string(),
        Just("true".to_string()),
        Just("none".to_string()),
        prop::collection::vec(ident(), 1..3).prop_map(|p| p.join(".")),
        "[a-z]{20,40}",
    ]
}

/// What separates two tokens: a space, or a comment and a line break.
fn loose(comment: Option<String>) -> String {
    comment.map_or(" ".to_string(), |c| format!(" {c}\n"))
}

/// `open`, the elements each followed by a comma and maybe a comment (then a line break), `close`.
fn bracket(open: &str, elems: Vec<(String, Option<String>)>, close: &str) -> String {
    let mut out = open.to_string();
    for (elem, note) in elems {
        out.push_str(&elem);
        match note {
            Some(c) => out.push_str(&format!(", {c}\n")),
            None => out.push_str(", "),
        }
    }
    out + close
}

fn value() -> impl Strategy<Value = String> {
    leaf().prop_recursive(4, 40, 5, |inner| {
        let elems = prop::collection::vec((inner.clone(), maybe_comment()), 0..5);
        let fields = prop::collection::vec((ident(), inner.clone(), maybe_comment()), 0..4);
        let args = prop::collection::vec((prop::option::of(ident()), inner.clone(), maybe_comment()), 0..4);
        prop_oneof![
            elems.prop_map(|e| bracket("[", e, "]")),
            fields.prop_map(|f| bracket("{", f.into_iter().map(|(k, v, c)| (format!("{k}: {v}"), c)).collect(), "}")),
            (ident(), args).prop_map(|(f, a)| bracket(&format!("{f}("), named(a), ")")),
            inner.clone().prop_map(|v| format!("-({v})")),
            leaf().prop_map(|v| format!("-{v}")),
            (inner.clone(), "[-+*/]", maybe_comment(), inner.clone())
                .prop_map(|(a, op, c, b)| format!("{a} {op}{}{b}", loose(c))),
            (inner, maybe_comment()).prop_map(|(v, c)| format!("({v}{})", loose(c))),
        ]
    })
}

fn named(args: Vec<(Option<String>, String, Option<String>)>) -> Vec<(String, Option<String>)> {
    args.into_iter().map(|(name, v, c)| (name.map_or(v.clone(), |n| format!("{n}: {v}")), c)).collect()
}

/// Line breaks, maybe with blank lines and comment lines, between two units.
fn gap() -> impl Strategy<Value = String> {
    (0..3usize, prop::collection::vec(comment(), 0..2), 0..2usize).prop_map(|(blank, notes, after)| {
        let mut out = "\n".repeat(blank + 1);
        for note in notes {
            out.push_str(&format!("{note}\n"));
        }
        out + &"\n".repeat(after)
    })
}

/// A line of code with maybe a trailing comment.
fn line(code: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (code, maybe_comment(), gap()).prop_map(|(code, note, gap)| match note {
        Some(c) => format!("{code} {c}{gap}"),
        None => format!("{code}{gap}"),
    })
}

fn block_item() -> impl Strategy<Value = String> {
    line(prop_oneof![
        3 => (ident(), maybe_comment(), value()).prop_map(|(n, c, v)| format!("  {n} ={}{v}", loose(c))),
        1 => (ident(), prop::collection::vec((value(), maybe_comment()), 0..4))
            .prop_map(|(n, v)| format!("  sweep {n} in {}", bracket("[", v, "]"))),
        1 => (value(), "<=|>=|==|!=|<|>", value())
            .prop_map(|(a, op, b)| format!("  expect {a} {op} {b}")),
    ])
}

fn block() -> impl Strategy<Value = String> {
    (maybe_comment(), prop::collection::vec(block_item(), 0..5)).prop_map(|(open, items)| match open {
        Some(c) => format!(" {{ {c}\n{}}}", items.concat()),
        None => format!(" {{\n{}}}", items.concat()),
    })
}

fn item() -> impl Strategy<Value = String> {
    let args = prop::collection::vec((prop::option::of(ident()), value(), maybe_comment()), 0..4);
    line(prop_oneof![
        (ident(), maybe_comment(), value()).prop_map(|(n, c, v)| format!("{n} ={}{v}", loose(c))),
        "[a-z/]{1,8}\\.mg".prop_map(|p| format!("use \"{p}\"")),
        (ident(), ident(), prop::option::of(block()))
            .prop_map(|(n, k, b)| format!("dataset {n} = {k}{}", b.unwrap_or_default())),
        (ident(), ident(), prop::option::of(args), prop::option::of(block())).prop_map(|(n, k, a, b)| {
            let a = a.map(|a| bracket("(", named(a), ")")).unwrap_or_default();
            format!("stage {n} = {k}{a}{}", b.unwrap_or_default())
        }),
    ])
}

fn pipeline() -> impl Strategy<Value = String> {
    (gap(), ident(), maybe_comment(), gap(), prop::collection::vec(item(), 0..6)).prop_map(
        |(lead, name, note, gap, items)| {
            let note = note.map(|c| format!(" {c}")).unwrap_or_default();
            format!("{}pipeline {name}{note}{gap}{}", lead.trim_start_matches('\n'), items.concat())
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_pipelines_format_idempotently(text in pipeline()) {
        let (parsed, diags) = parse_file(FileId(0), &text);
        prop_assert!(diags.is_empty(), "generated an invalid pipeline:\n{}\n{:?}", text, diags);
        let out = check_invariants(&text);
        prop_assert_eq!(parse_file(FileId(0), &out).0.comments.len(), parsed.comments.len());
    }
}
