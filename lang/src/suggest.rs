//! "Did you mean ...?": the nearest known name to a misspelt one.

/// The candidate closest to `name` by edit distance, if it is close enough to be a plausible
/// typo (at most a third of the name's length, and at least one edit allowed), or if one of
/// the two is a prefix of the other (`valid` for `val`).
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let limit = (name.chars().count() / 3).max(1);
    let prefix = |c: &str| c.len() >= 3 && name.len() >= 3 && (name.starts_with(c) || c.starts_with(name));
    candidates
        .into_iter()
        .filter(|c| *c != name)
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
    }
}
