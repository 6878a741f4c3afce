//! What `evaluate` writes: per-volume scores, the aggregate metrics `expect` gates on, and a
//! readable table.
//!
//! - `metrics.json`: every reported metric; per per-volume score its mean, standard deviation
//!   (population) and the number of volumes it was measured on; per modality the full regional
//!   report (tumour, background, their ratio, the four RANO-BM bins);
//! - `per_volume.json` and `per_volume.csv`: each case's scores, with the reference patient it
//!   paired with;
//! - `report.md`: the metrics as a Markdown table.
//!
//! Per-volume scores are averaged over the volumes that have them (HD95 is absent when a mask
//! is empty; unpaired cases have no paired scores). Across images, `METRIC` is the mean of the
//! `METRIC_IMAGE` values; regional errors are pooled over voxels instead (pitfall 34).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use medgen_engine::runner::StageError;
use serde::Serialize;

use super::stage_io::write_json;
use crate::metrics::regional::RegionalReport;
use crate::metrics::segmentation::SegmentationScores;
use crate::train::trainer::failed;

/// One case's scores by name (`psnr_t1_pre`, `dice`, `lpips_3d_t1_gd_width`, …).
#[derive(Default, Serialize)]
pub struct Scores {
    values: BTreeMap<String, f64>,
}

impl Scores {
    /// `metric` measured on `modality`.
    pub fn image(&mut self, metric: &str, modality: &str, value: f64) {
        self.values.insert(format!("{metric}_{modality}"), value);
    }

    /// A finer score reported beside the metrics (e.g. one axis of `lpips_3d`).
    pub fn detail(&mut self, name: String, value: f64) {
        self.values.insert(name, value);
    }

    /// The mask metrics of the case's mask against its reference's that `wanted` asks for:
    /// `dice`, `iou` and `hd95` each, and precision and recall with Dice or IoU
    /// (`stages::evaluate::metric_names`).
    pub fn mask(&mut self, s: SegmentationScores, wanted: impl Fn(&str) -> bool) {
        let overlap = wanted("dice") || wanted("iou");
        let scores = [
            ("dice", Some(s.dice), wanted("dice")),
            ("iou", Some(s.iou), wanted("iou")),
            ("precision", s.precision, overlap),
            ("recall", s.recall, overlap),
            ("hd95", s.hd95_mm, wanted("hd95")),
        ];
        for (name, value, wanted) in scores {
            if let (Some(value), true) = (value, wanted) {
                self.values.insert(name.to_string(), value);
            }
        }
    }
}

#[derive(Serialize)]
struct CaseRow {
    case: String,
    patient: Option<String>,
    scores: BTreeMap<String, f64>,
}

#[derive(Serialize)]
struct Summary {
    mean: f64,
    std: f64,
    volumes: usize,
    /// Paired volumes without the score (HD95 of an empty mask, precision of an empty
    /// prediction): the mean leaves them out.
    absent: usize,
}

pub struct Report {
    metrics: Vec<String>,
    images: Vec<String>,
    cases: Vec<CaseRow>,
    /// Dataset-level values: FID and KID per modality, and their details.
    dataset: BTreeMap<String, f64>,
    /// What a reader of the numbers should know (a regularised FID).
    notes: BTreeSet<String>,
    regional: BTreeMap<String, RegionalReport>,
}

impl Report {
    pub fn new(metrics: Vec<String>, images: Vec<String>) -> Self {
        Report {
            metrics,
            images,
            cases: Vec::new(),
            dataset: BTreeMap::new(),
            notes: BTreeSet::new(),
            regional: BTreeMap::new(),
        }
    }

    pub fn add_case(&mut self, case: &str, patient: Option<&str>, scores: Scores) {
        self.cases.push(CaseRow {
            case: case.to_string(),
            patient: patient.map(str::to_string),
            scores: scores.values,
        });
    }

    /// A distribution metric of one modality.
    pub fn distribution(&mut self, metric: &str, modality: &str, value: f64) {
        self.dataset.insert(format!("{metric}_{modality}"), value);
    }

    /// A finer dataset-level value (one axis of a 2.5D FID).
    pub fn detail(&mut self, name: String, value: f64) {
        self.dataset.insert(name, value);
    }

    /// A remark on a value, kept in `metrics.json` and `report.md`.
    pub fn note(&mut self, note: String) {
        self.notes.insert(note);
    }

    pub fn set_regional(&mut self, reports: BTreeMap<String, RegionalReport>) {
        self.regional = reports;
    }

    /// Mean, standard deviation and count of every per-volume score.
    fn summaries(&self) -> BTreeMap<String, Summary> {
        let names: BTreeSet<&String> = self.cases.iter().flat_map(|c| c.scores.keys()).collect();
        names
            .into_iter()
            .map(|name| {
                let values: Vec<f64> = self.cases.iter().filter_map(|c| c.scores.get(name).copied()).collect();
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
                let paired = self.cases.iter().filter(|c| c.patient.is_some()).count();
                let absent = paired.saturating_sub(values.len());
                (name.clone(), Summary { mean, std: variance.sqrt(), volumes: values.len(), absent })
            })
            .collect()
    }

    /// Every metric by name, as `expect` sees them.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        self.metrics_from(&self.summaries())
    }

    fn metrics_from(&self, summaries: &BTreeMap<String, Summary>) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = summaries.iter().map(|(k, s)| (k.clone(), s.mean)).collect();
        out.extend(self.dataset.iter().map(|(k, v)| (k.clone(), *v)));
        for metric in &self.metrics {
            if metric == "regional" {
                out.extend(self.regional_metrics());
                continue;
            }
            let per_image: Vec<f64> =
                self.images.iter().filter_map(|i| out.get(&format!("{metric}_{i}")).copied()).collect();
            if !per_image.is_empty() {
                out.insert(metric.clone(), per_image.iter().sum::<f64>() / per_image.len() as f64);
            }
        }
        let stds: Vec<f64> = self.images.iter().filter_map(|i| out.get(&format!("kid_std_{i}")).copied()).collect();
        if !stds.is_empty() {
            out.insert("kid_std".into(), stds.iter().sum::<f64>() / stds.len() as f64);
        }
        out
    }

    /// Tumour and background MSE per modality, and pooled over modalities.
    fn regional_metrics(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (region, pick) in [("regional_tumour", 0), ("regional_background", 1)] {
            let (mut squared, mut voxels) = (0.0, 0u64);
            for (modality, report) in &self.regional {
                let score = if pick == 0 { &report.tumour } else { &report.background };
                if let Some(mse) = score.mse {
                    out.insert(format!("{region}_{modality}"), mse);
                    squared += mse * score.voxels as f64;
                    voxels += score.voxels;
                }
            }
            if voxels > 0 {
                out.insert(region.to_string(), squared / voxels as f64);
            }
        }
        out
    }

    /// Writes `metrics.json`, `per_volume.json`, `per_volume.csv` and `report.md` to `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), StageError> {
        let summaries = self.summaries();
        let metrics = self.metrics_from(&summaries);
        write_json(
            dir,
            "metrics.json",
            &serde_json::json!({
                "metrics": metrics,
                "per_volume": summaries,
                "regional": self.regional,
                "notes": self.notes,
            }),
        )?;
        write_json(dir, "per_volume.json", &self.cases)?;
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text).map_err(|e| failed(format!("cannot write {name}: {e}")))
        };
        write("per_volume.csv", self.csv())?;
        write("report.md", table(&metrics, &summaries, &self.notes))
    }

    fn csv(&self) -> String {
        let names: BTreeSet<&String> = self.cases.iter().flat_map(|c| c.scores.keys()).collect();
        let mut text = String::from("case,patient");
        names.iter().for_each(|n| text.push_str(&format!(",{n}")));
        text.push('\n');
        for case in &self.cases {
            text.push_str(&format!("{},{}", case.case, case.patient.as_deref().unwrap_or("")));
            for name in &names {
                text.push(',');
                if let Some(v) = case.scores.get(*name) {
                    text.push_str(&v.to_string());
                }
            }
            text.push('\n');
        }
        text
    }
}

/// The metrics as a Markdown table, with each per-volume score's spread and count.
fn table(metrics: &BTreeMap<String, f64>, summaries: &BTreeMap<String, Summary>, notes: &BTreeSet<String>) -> String {
    let mut text = String::from(
        "| metric | value | std over volumes | volumes | volumes without it |\n|---|---:|---:|---:|---:|\n",
    );
    for (name, value) in metrics {
        match summaries.get(name) {
            Some(s) => writeln!(text, "| {name} | {value:.6} | {:.6} | {} | {} |", s.std, s.volumes, s.absent),
            None => writeln!(text, "| {name} | {value:.6} | | | |"),
        }
        .expect("writing to a String cannot fail");
    }
    for note in notes {
        writeln!(text, "\n{note}").expect("writing to a String cannot fail");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::segmentation::Overlap;

    fn scores(hd95_mm: Option<f64>, precision: Option<f64>) -> SegmentationScores {
        let overlap = Overlap::default();
        SegmentationScores { dice: 0.5, iou: 0.25, precision, recall: Some(0.5), hd95_mm, overlap }
    }

    #[test]
    fn mask_scores_follow_the_request_and_summaries_count_the_volumes_without_them() {
        let mut report = Report::new(vec!["hd95".into()], Vec::new());
        let mut with = Scores::default();
        with.mask(scores(Some(3.0), Some(1.0)), |m| m == "hd95");
        let mut without = Scores::default();
        without.mask(scores(None, Some(1.0)), |m| m == "hd95");
        assert_eq!(with.values.keys().collect::<Vec<_>>(), ["hd95"], "only what was asked for");
        report.add_case("a", Some("p1"), with);
        report.add_case("b", Some("p2"), without);
        let summaries = report.summaries();
        assert_eq!((summaries["hd95"].volumes, summaries["hd95"].absent), (1, 1), "one volume had an empty mask");
        assert_eq!(report.metrics()["hd95"], 3.0, "the mean leaves the empty one out");

        let mut overlap = Scores::default();
        overlap.mask(scores(None, None), |m| m == "dice");
        assert_eq!(overlap.values.keys().collect::<Vec<_>>(), ["dice", "recall"], "precision is absent, iou unasked");
    }
}
