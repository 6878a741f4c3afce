//! "Did you mean ...?": the nearest known name to a misspelt one.
//!
//! Edit distance costs time and memory in the product of the two lengths, and a file may hold
//! a megabyte-long name or thousands of names, each misspelt; so names longer than
//! [`MAX_NAME_CHARS`] get no suggestion, a candidate whose length alone rules it out is skipped
//! before any distance is computed, and at most [`MAX_CANDIDATES`] candidates are looked at.

/// Longest name that gets, or is, a suggestion: real names are a few words long.
const MAX_NAME_CHARS: usize = 64;

/// Most candidates compared with one name: pipelines have tens of names.
const MAX_CANDIDATES: usize = 1000;

/// The candidate closest to `name` by edit distance, if it is close enough to be a plausible
/// typo (at most a third of the name's length, and at least one edit allowed), or if one of
/// the two is a prefix of the other (`valid` for `val`).
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return None;
    }
    let limit = (chars / 3).max(1);
    let prefix = |c: &str| c.len() >= 3 && name.len() >= 3 && (name.starts_with(c) || c.starts_with(name));
    candidates
        .into_iter()
        .take(MAX_CANDIDATES)
        .filter(|c| *c != name && c.chars().count() <= MAX_NAME_CHARS)
        .filter(|c| c.chars().count().abs_diff(chars) <= limit || prefix(c))
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= limit || prefix(c))
        .min_by_key(|(d, c)| (*d, c.to_string()))
        .map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::nearest;

    #[test]
    fn finds_typos_and_ignores_strangers() {
        assert_eq!(nearest("epochz", ["epochs", "lr", "ema"]), Some("epochs".into()));
        assert_eq!(nearest("lrr", ["epochs", "lr", "ema"]), Some("lr".into()));
        assert_eq!(nearest("stratgey", ["strategy", "mode"]), Some("strategy".into()));
        assert_eq!(nearest("valid", ["train", "val", "test"]), Some("val".into()));
        assert_eq!(nearest("banana", ["epochs", "lr", "ema"]), None);
        let long = "x".repeat(100_000);
        assert_eq!(nearest(&long, [long.as_str(), &format!("{long}y")]), None);
    }
}
