//! Which patients go to which split. Splits are by patient, never by slice, so no patient's
//! anatomy leaks from training into validation or test. A patient's split depends only on its
//! id and the seed — blake3 of both, read as a number in [0, 1), compared with the cumulative
//! fractions — so splits are deterministic, and adding a patient never moves anyone else.
//!
//! Hashing gives fractions only on average; with few patients a split with a non-zero fraction
//! could come out empty, which would make a training stage's "best" checkpoint meaningless
//! (seed pitfall 39). So each such split takes the patient of the largest split whose hash is
//! closest to its interval. One function serves the checker (to predict, for a phantom, an
//! empty split before anything runs) and the dataset stages (to make the split), so the two
//! cannot disagree.

use std::collections::BTreeMap;

/// Fractions of patients per split; they add up to 1 (the checker enforces it).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitFractions {
    pub train: f64,
    pub val: f64,
    pub test: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    pub fn parse(name: &str) -> Option<Split> {
        Split::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl SplitFractions {
    fn of(&self, split: Split) -> f64 {
        match split {
            Split::Train => self.train,
            Split::Val => self.val,
            Split::Test => self.test,
        }
    }

    /// The `[start, end)` interval of a split in [0, 1): train, then val, then test.
    fn interval(&self, split: Split) -> (f64, f64) {
        match split {
            Split::Train => (0.0, self.train),
            Split::Val => (self.train, self.train + self.val),
            Split::Test => (self.train + self.val, 1.0),
        }
    }
}

/// A patient's position in [0, 1), from its id and the seed.
fn position(id: &str, seed: u64) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"medgen split v1\0");
    hasher.update(&seed.to_le_bytes());
    hasher.update(id.as_bytes());
    let bytes = hasher.finalize();
    let word = u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"));
    (word >> 11) as f64 / (1u64 << 53) as f64
}

/// The split of every patient.
pub fn assign(ids: &[String], seed: u64, fractions: &SplitFractions) -> BTreeMap<String, Split> {
    let positions: BTreeMap<&str, f64> = ids.iter().map(|id| (id.as_str(), position(id, seed))).collect();
    let mut out: BTreeMap<String, Split> = positions
        .iter()
        .map(|(id, u)| {
            let split = Split::ALL.into_iter().find(|s| *u < fractions.interval(*s).1).unwrap_or(Split::Test);
            (id.to_string(), split)
        })
        .collect();
    for wanted in Split::ALL {
        let count = |out: &BTreeMap<String, Split>, s: Split| out.values().filter(|v| **v == s).count();
        if fractions.of(wanted) <= 0.0 || count(&out, wanted) > 0 {
            continue;
        }
        let donor = Split::ALL.into_iter().filter(|s| *s != wanted).max_by_key(|s| count(&out, *s));
        let Some(donor) = donor.filter(|d| count(&out, *d) > 1) else { continue };
        let (lo, hi) = fractions.interval(wanted);
        let centre = (lo + hi) / 2.0;
        let closest =
            out.iter().filter(|(_, s)| **s == donor).map(|(id, _)| id.clone()).min_by(|a, b| {
                (positions[a.as_str()] - centre).abs().total_cmp(&(positions[b.as_str()] - centre).abs())
            });
        if let Some(id) = closest {
            out.insert(id, wanted);
        }
    }
    out
}

/// How many patients each split gets.
pub fn counts(ids: &[String], seed: u64, fractions: &SplitFractions) -> BTreeMap<Split, usize> {
    let mut counts: BTreeMap<Split, usize> = Split::ALL.into_iter().map(|s| (s, 0)).collect();
    for split in assign(ids, seed, fractions).values() {
        *counts.get_mut(split).expect("every split counted") += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p{i:04}")).collect()
    }

    const USUAL: SplitFractions = SplitFractions { train: 0.75, val: 0.125, test: 0.125 };

    #[test]
    fn deterministic_and_close_to_the_fractions() {
        let a = assign(&ids(1000), 7, &USUAL);
        assert_eq!(a, assign(&ids(1000), 7, &USUAL));
        assert_ne!(a, assign(&ids(1000), 8, &USUAL), "the seed matters");
        let c = counts(&ids(1000), 7, &USUAL);
        assert!((700..=800).contains(&c[&Split::Train]), "{c:?}");
        assert!((90..=160).contains(&c[&Split::Val]), "{c:?}");
    }

    #[test]
    fn adding_a_patient_moves_no_one_else() {
        let before = assign(&ids(200), 3, &USUAL);
        let after = assign(&ids(201), 3, &USUAL);
        for (id, split) in &before {
            assert_eq!(after[id], *split, "{id} moved");
        }
    }

    #[test]
    fn small_cohorts_get_every_split_they_ask_for() {
        for seed in 0..50 {
            let c = counts(&ids(8), seed, &USUAL);
            assert!(c.values().all(|n| *n > 0), "seed {seed}: {c:?}");
            assert_eq!(c.values().sum::<usize>(), 8);
        }
        let none = SplitFractions { train: 0.9, val: 0.0, test: 0.1 };
        assert_eq!(counts(&ids(50), 1, &none)[&Split::Val], 0, "a zero fraction stays empty");
        assert_eq!(counts(&ids(1), 1, &USUAL).values().sum::<usize>(), 1);
    }
}
