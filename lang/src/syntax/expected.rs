//! pest's "expected one of these rules" turned into words a person reads: `expected a value,
//! found '}'`. Rule names never reach the user.

use std::collections::BTreeSet;

use pest::error::{Error, ErrorVariant, InputLocation};

use super::parse::Rule;
use crate::diagnostic::Diagnostic;
use crate::errors::ErrorKind;
use crate::source::{FileId, Span};

/// A diagnostic for a pest error in `text[chunk_start..]`.
pub fn describe(file: FileId, text: &str, chunk_start: usize, err: &Error<Rule>) -> Diagnostic {
    let pos = chunk_start
        + match err.location {
            InputLocation::Pos(p) => p,
            InputLocation::Span((s, _)) => s,
        };
    let mut expected: BTreeSet<&'static str> = BTreeSet::new();
    if let ErrorVariant::ParsingError { positives, .. } = &err.variant {
        expected.extend(positives.iter().filter_map(|r| rule_words(*r)));
    }
    if let Some(attempts) = err.parse_attempts() {
        for token in attempts.expected_tokens() {
            if let Some(w) = token_words(&token.to_string()) {
                expected.insert(w);
            }
        }
    }
    // "a value" already covers its parts.
    if expected.contains("a value") {
        for part in ["a number", "a string", "a list", "a record", "a name", "`-`", "`(`", "`[`", "`{`"] {
            expected.remove(part);
        }
    }
    let (found, found_len) = found_at(text, pos);
    let hint = hint(&expected, text, pos);
    let expected = join_or(expected.into_iter().collect());
    let end = (pos + found_len).min(text.len());
    Diagnostic::new(ErrorKind::Syntax { expected, found, hint }, Span::new(file, pos, end))
}

fn rule_words(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::expr
        | Rule::operand
        | Rule::float
        | Rule::int
        | Rule::bool
        | Rule::none
        | Rule::group
        | Rule::value_only => "a value",
        Rule::string => "a string",
        Rule::list => "a list",
        Rule::record => "a record",
        Rule::ident | Rule::path | Rule::call => "a name",
        Rule::pipeline_decl | Rule::use_decl | Rule::dataset_decl | Rule::stage_decl => "a declaration",
        Rule::binding => "`name = value`",
        Rule::sweep | Rule::expect => "`sweep`, `expect`",
        Rule::block => "`{`",
        Rule::cmp_op => "a comparison (`<`, `<=`, `>`, `>=`, `==`, `!=`)",
        Rule::add | Rule::sub | Rule::mul | Rule::div => "an operator",
        Rule::field => "a field `name: value`",
        Rule::EOI => "the end of the file",
        _ => return None,
    })
}

fn token_words(token: &str) -> Option<&'static str> {
    Some(match token {
        "=" => "`=`",
        ":" => "`:`",
        "," => "`,`",
        "(" => "`(`",
        ")" => "`)`",
        "[" => "`[`",
        "]" => "`]`",
        "{" => "`{`",
        "}" => "`}`",
        "." => "`.`",
        "in" => "`in`",
        "<" | "<=" | ">" | ">=" | "==" | "!=" => "a comparison (`<`, `<=`, `>`, `>=`, `==`, `!=`)",
        // `-` also starts a negative value, which "a value" already covers.
        "+" | "*" | "/" => "an operator",
        _ => return None,
    })
}

fn join_or(items: Vec<&str>) -> String {
    match items.as_slice() {
        [] => "something else".to_string(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Whether `pos` (an unexpected `=`) follows a name that starts its line right after a line
/// ending in `=`: `lr =` with its value forgotten, then `epochs = 20`.
fn value_taken_from_next_line(text: &str, pos: usize) -> bool {
    let before = text[..pos].trim_end();
    let name_start = before.trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_').len();
    if name_start == before.len() {
        return false;
    }
    let gap = &before[..name_start];
    let previous_line = gap.trim_end_matches([' ', '\t']);
    let Some(line_before) = previous_line.strip_suffix('\n') else { return false };
    let line_before = line_before.trim_end();
    line_before.ends_with('=') && !line_before.ends_with("==")
}

/// What stands at `pos`, for "found ...", and how many bytes of it to underline.
fn found_at(text: &str, pos: usize) -> (String, usize) {
    let rest = text.get(pos..).unwrap_or("");
    let Some(c) = rest.chars().next() else {
        return ("the end of the file".to_string(), 0);
    };
    if c == '\n' || c == '\r' {
        return ("the end of the line".to_string(), 1);
    }
    if c.is_ascii_alphanumeric() || c == '_' {
        let word: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.').collect();
        return (format!("`{word}`"), word.len());
    }
    (format!("`{c}`"), c.len_utf8())
}

fn hint(expected: &BTreeSet<&'static str>, text: &str, pos: usize) -> Option<&'static str> {
    let next = text.get(pos..).and_then(|r| r.chars().next());
    let line = text.get(..pos).map_or("", |before| before.rsplit('\n').next().unwrap_or(""));
    if expected.contains("`=`") && next == Some(':') {
        return Some("parameters are written `name = value`; `name: value` is for record fields and call arguments");
    }
    if expected.contains("`:`") && next == Some('=') {
        return Some("fields of a record and named arguments are written `name: value`");
    }
    if expected.contains("a value") && matches!(next, Some('}' | ')' | ']') | None) {
        return Some("every `=` needs a value after it");
    }
    let rest_of_line = text.get(pos..).unwrap_or("").split('\n').next().unwrap_or("");
    let unterminated_here = next == Some('"') && rest_of_line.matches('"').count() % 2 == 1;
    let unterminated_before = line.matches('"').count() % 2 == 1 && matches!(next, Some('\n') | None);
    if unterminated_here || unterminated_before {
        return Some("a string must end on the line where it starts: add the closing `\"`");
    }
    if next == Some('=') && value_taken_from_next_line(text, pos) {
        return Some("the line above ends with `=` and no value, so it took this line's name as its value");
    }
    let word: String =
        text.get(pos..).unwrap_or("").chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    if matches!(
        word.as_str(),
        "pipeline" | "use" | "dataset" | "stage" | "sweep" | "expect" | "in" | "true" | "false" | "none"
    ) && expected.contains("a name")
    {
        return Some("that word is reserved by the language; choose another name");
    }
    if expected.contains("a declaration") {
        return Some(
            "top-level lines are `pipeline NAME`, `use \"file.mg\"`, `dataset ...`, `stage ...` or `NAME = value`",
        );
    }
    None
}
