//! Segmentation metrics (`metrics::segmentation`) and regional metrics (`metrics::regional`,
//! with the components and Feret diameters of `data::tumours`) against their references:
//! SciPy's `ndimage.label`, brute-force pairwise distances, scikit-image's `feret_diameter_max`,
//! MONAI 1.6.1's `compute_dice` / `compute_iou` / confusion-matrix metrics /
//! `compute_hausdorff_distance`, and NumPy sums for the pixel-weighted regional errors.
//!
//! The reference values are in `tests/reference/metrics_seg_reference.json`, made by
//! `tests/reference/metrics_seg_reference.py`; the inputs are rebuilt here from the recipes stored
//! there (integer ellipsoids and a splitmix64 stream, identical on both sides), so no volume is
//! stored and these tests never run Python.

use std::sync::OnceLock;

use medgen_stdlib::data::phantom::SizeBin;
use medgen_stdlib::data::tumours::{feret_diameters, label, Geometry};
use medgen_stdlib::data::volume::{Spacing, Volume};
use medgen_stdlib::metrics::regional::{
    ModalityAccumulators, RegionScore, RegionalAccumulator, RegionalError, TumourMap,
};
use medgen_stdlib::metrics::segmentation::{hausdorff_distance, hd95, score, BinaryMask, MaskRole, Overlap, SegError};
use serde_json::Value;

// ---- Inputs, built exactly as the reference script builds them ----------------------------------

fn reference() -> &'static Value {
    static REFERENCE: OnceLock<Value> = OnceLock::new();
    REFERENCE.get_or_init(|| serde_json::from_str(include_str!("reference/metrics_seg_reference.json")).unwrap())
}

/// A float of the reference; non-finite values are stored as "nan" / "inf".
fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        _ => v.as_f64().unwrap(),
    }
}

fn usizes<const N: usize>(v: &Value) -> [usize; N] {
    std::array::from_fn(|k| v[k].as_u64().unwrap() as usize)
}

fn spacing_of(v: &Value) -> Spacing {
    Spacing::from_dhw(std::array::from_fn(|k| num(&v[k])))
}

fn geometry_of(v: &Value) -> Geometry {
    match v.as_str().unwrap() {
        "volume" => Geometry::Volume,
        "slices" => Geometry::Slices,
        other => panic!("unknown geometry {other}"),
    }
}

/// splitmix64, as in the reference script.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A mask from its recipe: a union of integer ellipsoids with semi-axes r + 1/2, then flips.
fn build_mask(spec: &Value, spacing: Spacing) -> Volume {
    let shape = usizes::<3>(&spec["shape"]);
    let mut mask = Volume::zeros(shape, spacing);
    for e in spec["ellipsoids"].as_array().unwrap() {
        let e: [i64; 6] = std::array::from_fn(|k| e[k].as_i64().unwrap());
        let a = [2 * e[3] + 1, 2 * e[4] + 1, 2 * e[5] + 1];
        for (i, v) in mask.data.iter_mut().enumerate() {
            let at = [(i / (shape[1] * shape[2])) as i64, (i / shape[2] % shape[1]) as i64, (i % shape[2]) as i64];
            let t: [i64; 3] = std::array::from_fn(|k| (2 * (at[k] - e[k])).pow(2));
            if t[0] * (a[1] * a[2]).pow(2) + t[1] * (a[0] * a[2]).pow(2) + t[2] * (a[0] * a[1]).pow(2)
                <= (a[0] * a[1] * a[2]).pow(2)
            {
                *v = 1.0;
            }
        }
    }
    if let Some(flips) = spec.get("flips") {
        let mut rng = SplitMix(flips["seed"].as_u64().unwrap());
        let below = flips["below"].as_u64().unwrap();
        for v in &mut mask.data {
            if rng.next() >> 40 < below {
                *v = 1.0 - *v;
            }
        }
    }
    mask
}

fn build_image(shape: [usize; 3], spacing: Spacing, seed: u64) -> Volume {
    let mut rng = SplitMix(seed);
    let mut image = Volume::zeros(shape, spacing);
    for v in &mut image.data {
        *v = ((rng.next() >> 40) as f64 / (1u64 << 24) as f64) as f32;
    }
    image
}

/// `reference + scale * noise` in f32, the scale depending on the mask.
fn build_generated(reference: &Volume, noise: &Volume, mask: &Volume, inside: f32, outside: f32) -> Volume {
    let mut out = reference.clone();
    for ((o, &n), &m) in out.data.iter_mut().zip(&noise.data).zip(&mask.data) {
        *o += if m == 1.0 { inside } else { outside } * n;
    }
    out
}

fn binary(v: &Volume, role: MaskRole) -> BinaryMask {
    BinaryMask::from_volume(v, role).unwrap()
}

fn pair(case: &Value) -> (BinaryMask, BinaryMask, Geometry) {
    let spacing = spacing_of(&case["spacing"]);
    (
        binary(&build_mask(&case["prediction"], spacing), MaskRole::Prediction),
        binary(&build_mask(&case["reference"], spacing), MaskRole::Reference),
        geometry_of(&case["geometry"]),
    )
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

// ---- Components and Feret diameters --------------------------------------------------------------

#[test]
fn components_match_scipy_label() {
    for case in reference()["components"].as_array().unwrap() {
        let mask = build_mask(case, spacing_of(&case["spacing"]));
        let labels = label(binary(&mask, MaskRole::Reference).foreground(), mask.shape, geometry_of(&case["geometry"]));
        let expected: Vec<u32> =
            case["labels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(labels.count, case["count"].as_u64().unwrap() as usize, "{}", case["name"]);
        assert!(labels.count > 10, "{}: too few components to test anything", case["name"]);
        assert_eq!(labels.ids, expected, "{}", case["name"]);
    }
}

#[test]
fn feret_diameters_match_brute_force_pairwise_distances() {
    let mut worst = 0.0f64;
    for case in reference()["components"].as_array().unwrap() {
        let spacing = spacing_of(&case["spacing"]);
        let mask = build_mask(case, spacing);
        let labels = label(binary(&mask, MaskRole::Reference).foreground(), mask.shape, geometry_of(&case["geometry"]));
        let ours = feret_diameters(&labels, spacing);
        let expected: Vec<f64> = case["feret_mm"].as_array().unwrap().iter().map(num).collect();
        assert_eq!(ours.len(), expected.len());
        for (k, (a, e)) in ours.iter().zip(&expected).enumerate() {
            assert!((a - e).abs() < 1e-9, "{} component {}: {a} mm, brute force {e} mm", case["name"], k + 1);
            worst = worst.max((a - e).abs());
        }
    }
    eprintln!("Feret vs brute force: max |deviation| {worst:e} mm");
}

/// scikit-image measures to the pixel outline's edges (a marching-squares contour of the convex
/// hull) where we measure between pixel centres, so its value is never shorter than ours and at
/// most one pixel diagonal longer.
#[test]
fn feret_diameters_are_bounded_by_scikit_image_in_2d() {
    let case = reference()["components"].as_array().unwrap().iter().find(|c| c["geometry"] == "slices").unwrap();
    let spacing = spacing_of(&case["spacing"]);
    let mask = build_mask(case, spacing);
    let labels = label(binary(&mask, MaskRole::Reference).foreground(), mask.shape, Geometry::Slices);
    let diagonal = spacing.height.hypot(spacing.width);
    let mut compared = 0;
    for (ours, theirs) in feret_diameters(&labels, spacing).iter().zip(case["skimage_feret_mm"].as_array().unwrap()) {
        if theirs.is_null() {
            continue;
        }
        let gap = num(theirs) - ours;
        assert!((-1e-9..=diagonal + 1e-9).contains(&gap), "ours {ours} mm, scikit-image {theirs} mm");
        compared += 1;
    }
    assert!(compared > 10);
}

#[test]
fn feret_diameters_of_degenerate_regions_are_defined() {
    let spacing = Spacing::new(2.0, 0.9, 0.7);
    let mut mask = vec![false; 6 * 12 * 12];
    let at = |z: usize, y: usize, x: usize| (z * 12 + y) * 12 + x;
    mask[at(0, 0, 0)] = true; // a single voxel: 0 mm
    for x in 3..9 {
        mask[at(0, 5, x)] = true; // a line along width: 5 · 0.7 mm
    }
    for z in 0..6 {
        mask[at(z, 10, 0)] = true; // a line along depth: 5 · 2 mm
    }
    for y in 0..4 {
        for x in 0..3 {
            mask[at(4, 1 + y, 5 + x)] = true; // a one-slice plane: its diagonal
        }
    }
    for k in 0..4 {
        mask[at(1 + k, 7 + k, 8 + k)] = true; // a diagonal line through corners (26-connected)
    }
    let labels = label(&mask, [6, 12, 12], Geometry::Volume);
    assert_eq!(labels.count, 5);
    let feret = feret_diameters(&labels, spacing);
    let expected = [0.0, 5.0 * 0.7, 10.0, (9.0 * 0.81f64 + 4.0 * 0.49).sqrt(), 3.0 * (4.0f64 + 0.81 + 0.49).sqrt()];
    // Components are numbered in raster order of their first voxel.
    let by_first_voxel = [at(0, 0, 0), at(0, 5, 3), at(0, 10, 0), at(4, 1, 5), at(1, 7, 8)];
    for (first, want) in by_first_voxel.iter().zip(expected) {
        let got = feret[labels.ids[*first] as usize - 1];
        assert!((got - want).abs() < 1e-12, "{got} mm, expected {want} mm");
    }
}

// ---- Overlap scores and Hausdorff distances -------------------------------------------------------

#[test]
fn overlap_scores_match_monai() {
    let mut worst = 0.0f64;
    for case in reference()["pairs"].as_array().unwrap() {
        let (p, r, geometry) = pair(case);
        let scores = score(&p, &r, geometry).unwrap();
        assert_eq!([p.voxels(), r.voxels()], [0, 1].map(|k| case["voxels"][k].as_u64().unwrap()));
        for (name, ours) in [
            ("dice", scores.dice),
            ("iou", scores.iou),
            ("precision", scores.precision.unwrap()),
            ("recall", scores.recall.unwrap()),
        ] {
            let deviation = relative(ours, num(&case[name]));
            assert!(deviation < 1e-6, "{} {name}: {ours}, MONAI {}", case["name"], case[name]);
            worst = worst.max(deviation);
        }
    }
    eprintln!("Dice/IoU/precision/recall vs MONAI (float32): max relative deviation {worst:e}");
}

#[test]
fn hausdorff_distances_match_monai_with_anisotropic_spacing() {
    let mut worst = 0.0f64;
    for case in reference()["pairs"].as_array().unwrap() {
        let (p, r, geometry) = pair(case);
        for (name, percentile) in [("hd95_mm", 95.0), ("hd_mm", 100.0)] {
            let ours = hausdorff_distance(&p, &r, geometry, percentile).unwrap().unwrap();
            let deviation = relative(ours, num(&case[name]));
            assert!(deviation < 1e-5, "{} {name}: {ours} mm, MONAI {} mm", case["name"], case[name]);
            worst = worst.max(deviation);
        }
        // The percentile matters in these cases, or the test could not tell HD95 from HD.
        assert!(num(&case["hd95_mm"]) < num(&case["hd_mm"]), "{}", case["name"]);
    }
    eprintln!("HD95/HD vs MONAI (float32): max relative deviation {worst:e}");
}

#[test]
fn empty_masks_have_explicit_scores() {
    let cases = reference()["empty"].as_array().unwrap();
    let find = |name: &str| pair(cases.iter().find(|c| c["name"] == name).unwrap());
    // MONAI says NaN for HD95 and, with ignore_empty, for Dice here; we say Dice 1 and no HD95.
    let (p, r, g) = find("both_empty");
    let s = score(&p, &r, g).unwrap();
    assert_eq!((s.dice, s.iou, s.precision, s.recall, s.hd95_mm), (1.0, 1.0, Some(1.0), Some(1.0), None));
    let (p, r, g) = find("prediction_empty");
    let s = score(&p, &r, g).unwrap();
    assert_eq!((s.dice, s.iou, s.precision, s.recall, s.hd95_mm), (0.0, 0.0, None, Some(0.0), None));
    let (p, r, g) = find("reference_empty");
    let s = score(&p, &r, g).unwrap();
    assert_eq!((s.dice, s.iou, s.precision, s.recall, s.hd95_mm), (0.0, 0.0, Some(0.0), None, None));
    // Where MONAI's value is finite, it is ours.
    for case in cases {
        let (p, r, g) = pair(case);
        let s = score(&p, &r, g).unwrap();
        for (name, ours) in
            [("dice", Some(s.dice)), ("iou", Some(s.iou)), ("precision", s.precision), ("recall", s.recall)]
        {
            if num(&case[name]).is_finite() {
                assert_eq!(ours, Some(num(&case[name])), "{} {name}", case["name"]);
            }
        }
    }
}

#[test]
fn identical_masks_score_perfectly_and_distances_are_symmetric() {
    for case in reference()["pairs"].as_array().unwrap() {
        let (p, r, geometry) = pair(case);
        let same = score(&r, &r, geometry).unwrap();
        assert_eq!(
            (same.dice, same.iou, same.precision, same.recall, same.hd95_mm),
            (1.0, 1.0, Some(1.0), Some(1.0), Some(0.0))
        );
        assert_eq!(hd95(&p, &r, geometry).unwrap(), hd95(&r, &p, geometry).unwrap());
    }
}

#[test]
fn hausdorff_distance_scales_with_the_spacing() {
    let case = &reference()["pairs"][0];
    let (p, r, geometry) = pair(case);
    let base = hd95(&p, &r, geometry).unwrap().unwrap();
    let doubled = |m: &BinaryMask, role| {
        let s = m.spacing();
        let mut v = Volume::zeros(m.shape(), Spacing::new(2.0 * s.depth, 2.0 * s.height, 2.0 * s.width));
        v.data = m.foreground().iter().map(|&f| f as u8 as f32).collect();
        binary(&v, role)
    };
    let twice = hd95(&doubled(&p, MaskRole::Prediction), &doubled(&r, MaskRole::Reference), geometry).unwrap().unwrap();
    assert!((twice - 2.0 * base).abs() < 1e-9, "{twice} vs 2 · {base}");
}

#[test]
fn probability_maps_are_rejected() {
    let mut v = Volume::zeros([2, 3, 4], Spacing::new(1.0, 1.0, 1.0));
    v.set(1, 2, 3, 1.0);
    assert!(BinaryMask::from_volume(&v, MaskRole::Prediction).is_ok());
    for bad in [0.73f32, 0.5, 255.0, -1.0, f32::NAN] {
        v.set(1, 0, 2, bad);
        let err = BinaryMask::from_volume(&v, MaskRole::Prediction).unwrap_err();
        assert!(matches!(err, SegError::NotBinary { role: MaskRole::Prediction, voxel: [1, 0, 2], .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("probability map") && message.contains("binarize_seg"), "{message}");
    }
}

#[test]
fn mismatched_grids_and_bad_requests_are_errors() {
    let one = |shape, spacing| binary(&Volume::zeros(shape, spacing), MaskRole::Reference);
    let s = Spacing::new(1.0, 1.0, 1.0);
    let a = one([2, 3, 4], s);
    assert!(matches!(Overlap::of(&a, &one([2, 4, 3], s)), Err(SegError::ShapeMismatch { .. })));
    assert!(matches!(
        hd95(&a, &one([2, 3, 4], Spacing::new(1.0, 1.0, 1.1)), Geometry::Volume),
        Err(SegError::SpacingMismatch { .. })
    ));
    // Within the tolerance of a spacing stored as f32, the grids agree.
    assert!(Overlap::of(&a, &one([2, 3, 4], Spacing::new(1.0, 1.0, 1.0 + 1e-7))).is_ok());
    assert_eq!(hd95(&a, &a, Geometry::Slices), Err(SegError::SlicesNeedOneSlice { depth: 2 }));
    assert_eq!(hausdorff_distance(&a, &a, Geometry::Volume, 101.0), Err(SegError::BadPercentile(101.0)));
}

// ---- Regional errors ------------------------------------------------------------------------------

struct RegionalVolume {
    mask: Volume,
    /// Per modality: (name, reference, generated).
    images: Vec<(String, Volume, Volume)>,
}

fn regional_volumes() -> Vec<RegionalVolume> {
    let regional = &reference()["regional"];
    let spacing = spacing_of(&regional["spacing"]);
    regional["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let mask = build_mask(&v["mask"], spacing);
            let images = v["modalities"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(name, m)| {
                    let reference = build_image(mask.shape, spacing, m["reference_seed"].as_u64().unwrap());
                    let noise = build_image(mask.shape, spacing, m["noise_seed"].as_u64().unwrap());
                    let (inside, outside) = (num(&m["inside"]) as f32, num(&m["outside"]) as f32);
                    let generated = build_generated(&reference, &noise, &mask, inside, outside);
                    (name.clone(), reference, generated)
                })
                .collect();
            RegionalVolume { mask, images }
        })
        .collect()
}

#[test]
fn regional_errors_match_numpy_per_tumour_per_bin_and_per_modality() {
    let expected = &reference()["regional"];
    let mut modalities = ModalityAccumulators::new();
    let mut worst = 0.0f64;
    let mut check = |what: String, ours: f64, theirs: &Value| {
        let deviation = relative(ours, num(theirs));
        assert!(deviation < 1e-12, "{what}: {ours}, NumPy {theirs}");
        worst = worst.max(deviation);
    };
    for (volume, spec) in regional_volumes().iter().zip(expected["volumes"].as_array().unwrap()) {
        let tumours = TumourMap::new(&binary(&volume.mask, MaskRole::Reference), Geometry::Volume);
        assert_eq!(tumours.tumours.len() as u64, spec["count"].as_u64().unwrap());
        for (modality, reference, generated) in &volume.images {
            let errors = modalities.add(modality, reference, generated, &tumours).unwrap();
            for (k, (ours, theirs)) in errors.iter().zip(spec["tumours"][modality].as_array().unwrap()).enumerate() {
                assert_eq!(ours.tumour.id as usize, k + 1);
                assert_eq!(ours.tumour.voxels, theirs["voxels"].as_u64().unwrap());
                assert_eq!(ours.tumour.bin.name(), theirs["bin"].as_str().unwrap());
                check(format!("{modality} tumour {} Feret", k + 1), ours.tumour.feret_mm, &theirs["feret_mm"]);
                check(format!("{modality} tumour {} MSE", k + 1), ours.mse, &theirs["mse"]);
                check(format!("{modality} tumour {} L1", k + 1), ours.l1, &theirs["l1"]);
            }
        }
    }
    let reports = modalities.report();
    assert_eq!(reports.keys().collect::<Vec<_>>(), ["t1_gd", "t1_pre"]);
    for (modality, report) in &reports {
        let pooled = &expected["pooled"][modality];
        assert_eq!(report.volumes, 2);
        let mut regions = vec![("tumour", report.tumour), ("background", report.background)];
        for bin in &report.by_bin {
            regions.push((bin.bin.name(), RegionScore { voxels: bin.voxels, mse: bin.mse, l1: bin.l1 }));
        }
        for (region, ours) in regions {
            assert_eq!(ours.voxels, pooled[region]["voxels"].as_u64().unwrap(), "{modality} {region}");
            check(format!("{modality} {region} MSE"), ours.mse.unwrap(), &pooled[region]["mse"]);
            check(format!("{modality} {region} L1"), ours.l1.unwrap(), &pooled[region]["l1"]);
        }
        assert_eq!(report.by_bin.iter().map(|b| b.bin).collect::<Vec<_>>(), SizeBin::ALL);
        assert!(report.by_bin.iter().all(|b| b.tumours > 0), "every bin is exercised");
    }
    // The modalities differ, so a combined figure would hide something.
    assert!(reports["t1_gd"].tumour.mse.unwrap() > 5.0 * reports["t1_pre"].tumour.mse.unwrap());
    eprintln!("regional errors vs NumPy float64: max relative deviation {worst:e}");
}

/// Volume A: 1 tumour voxel with error 1. Volume B: 99 tumour voxels with error 0. Pixel-weighted,
/// the tumour MSE is 1/100; a mean of per-volume means would say 1/2.
#[test]
fn errors_are_pixel_weighted_not_averaged_per_volume() {
    let s = Spacing::new(1.0, 1.0, 1.0);
    let zeros = Volume::zeros([1, 10, 10], s);
    let mut mask_a = zeros.clone();
    mask_a.set(0, 0, 0, 1.0);
    let mut generated_a = zeros.clone();
    generated_a.set(0, 0, 0, 1.0);
    let mut mask_b = zeros.clone();
    for i in 0..99 {
        mask_b.data[i] = 1.0;
    }
    generated_a.set(0, 9, 9, 2.0); // one background voxel wrong by 2 in A; none in B
    let mut total = RegionalAccumulator::new();
    let mut per_volume = Vec::new();
    for (mask, generated) in [(&mask_a, &generated_a), (&mask_b, &zeros)] {
        let tumours = TumourMap::new(&binary(mask, MaskRole::Reference), Geometry::Slices);
        let mut one = RegionalAccumulator::new();
        one.add(&zeros, generated, &tumours).unwrap();
        total.merge(&one);
        per_volume.push(one.report());
    }
    let report = total.report();
    assert_eq!(report.tumour.voxels, 100);
    assert_eq!(report.tumour.mse, Some(0.01));
    assert_eq!(per_volume[0].tumour.mse, Some(1.0));
    assert_eq!(per_volume[1].tumour.mse, Some(0.0));
    // Background: 99 voxels in A (one wrong by 2), 1 in B.
    assert_eq!(report.background.voxels, 100);
    assert_eq!(report.background.mse, Some(0.04));
    assert_eq!(report.background.l1, Some(0.02));
    assert_eq!(report.tumour_to_background_mse, Some(0.01 / 0.04));
    // Bins with no tumour report no error rather than 0.
    let large = report.by_bin.iter().find(|b| b.bin == SizeBin::Large).unwrap();
    assert_eq!((large.tumours, large.voxels, large.mse), (0, 0, None));
}

#[test]
fn merging_accumulators_equals_adding_in_one() {
    let volumes = regional_volumes();
    let mut one = RegionalAccumulator::new();
    let mut merged = RegionalAccumulator::new();
    for v in &volumes {
        let tumours = TumourMap::new(&binary(&v.mask, MaskRole::Reference), Geometry::Volume);
        let (_, reference, generated) = &v.images[0];
        one.add(reference, generated, &tumours).unwrap();
        let mut part = RegionalAccumulator::new();
        part.add(reference, generated, &tumours).unwrap();
        merged.merge(&part);
    }
    assert_eq!(one.report(), merged.report());
}

#[test]
fn regional_images_must_lie_on_the_mask_grid() {
    let s = Spacing::new(1.0, 1.0, 1.0);
    let mask = Volume::zeros([2, 3, 4], s);
    let tumours = TumourMap::new(&binary(&mask, MaskRole::Reference), Geometry::Volume);
    let mut acc = RegionalAccumulator::new();
    let err = acc.add(&mask, &Volume::zeros([2, 4, 3], s), &tumours).unwrap_err();
    assert!(matches!(err, RegionalError::ShapeMismatch { .. }), "{err}");
    let err = acc.add(&Volume::zeros([2, 3, 4], Spacing::new(1.0, 2.0, 1.0)), &mask, &tumours).unwrap_err();
    assert!(matches!(err, RegionalError::SpacingMismatch { .. }), "{err}");
}

/// Timing on a full-size pair (run with `--release -- --ignored --nocapture`): two offset
/// ellipsoids filling much of a 160×256×256 volume, anisotropic spacing.
#[test]
#[ignore]
fn hd95_on_a_full_size_volume() {
    let shape = [160usize, 256, 256];
    let spacing = Spacing::new(1.0, 0.9375, 0.9375);
    let ellipsoid = |c: [f64; 3], r: [f64; 3]| {
        let mut v = Volume::zeros(shape, spacing);
        for (i, x) in v.data.iter_mut().enumerate() {
            let at = [i / (256 * 256), i / 256 % 256, i % 256];
            let q: f64 = (0..3).map(|k| ((at[k] as f64 - c[k]) / r[k]).powi(2)).sum();
            *x = (q <= 1.0) as u8 as f32;
        }
        v
    };
    let p = binary(&ellipsoid([80.0, 128.0, 128.0], [70.0, 110.0, 100.0]), MaskRole::Prediction);
    let r = binary(&ellipsoid([84.0, 122.0, 131.0], [66.0, 112.0, 104.0]), MaskRole::Reference);
    let start = std::time::Instant::now();
    let scores = score(&p, &r, Geometry::Volume).unwrap();
    let labels = std::time::Instant::now();
    let tumours = TumourMap::new(&r, Geometry::Volume);
    eprintln!(
        "score (Dice + HD95 {:?} mm): {:.2?}; tumour map ({} tumour, Feret {:.2} mm): {:.2?}",
        scores.hd95_mm,
        labels - start,
        tumours.tumours.len(),
        tumours.tumours[0].feret_mm,
        labels.elapsed()
    );
}
