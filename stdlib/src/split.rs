//! How many patients go to each split. One function, used by the checker (to see an empty
//! validation split before anything runs) and by the data loaders (to make the split), so the
//! two can never disagree.

/// Fractions of patients per split; they add up to 1 (the checker enforces it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SplitFractions {
    pub train: f64,
    pub val: f64,
    pub test: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitCounts {
    pub train: usize,
    pub val: usize,
    pub test: usize,
}

/// Patients per split: validation and test are rounded to the nearest whole patient (but never
/// more than there are), and training takes the rest.
pub fn split_counts(patients: usize, f: &SplitFractions) -> SplitCounts {
    let round = |x: f64| ((x * patients as f64).round().max(0.0) as usize).min(patients);
    let val = round(f.val);
    let test = round(f.test).min(patients - val);
    SplitCounts { train: patients - val - test, val, test }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(train: f64, val: f64, test: f64) -> SplitFractions {
        SplitFractions { train, val, test }
    }

    #[test]
    fn counts_add_up_to_the_patients() {
        assert_eq!(split_counts(32, &f(0.75, 0.125, 0.125)), SplitCounts { train: 24, val: 4, test: 4 });
        assert_eq!(split_counts(10, &f(0.8, 0.1, 0.1)), SplitCounts { train: 8, val: 1, test: 1 });
        assert_eq!(split_counts(3, &f(0.8, 0.1, 0.1)), SplitCounts { train: 3, val: 0, test: 0 });
        assert_eq!(split_counts(2, &f(0.0, 0.5, 0.5)), SplitCounts { train: 0, val: 1, test: 1 });
        assert_eq!(split_counts(1, &f(0.0, 1.0, 1.0)), SplitCounts { train: 0, val: 1, test: 0 });
    }
}
