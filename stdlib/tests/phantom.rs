//! The synthetic phantom: determinism, the tumour mask against the tumour list, the RANO-BM size
//! distribution, anatomy and contrast, value range, anisotropic spacing, small shapes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use medgen_stdlib::data::phantom::{
    contrast, generate, tissues, tumours, PhantomConfig, SizeBin, Tissue, TissueMap, Tumour,
};
use medgen_stdlib::data::volume::{Spacing, Volume};

const ALL: [&str; 6] = ["t1_pre", "t1_gd", "bravo", "flair", "t2", "seg"];
const IMAGES: [&str; 5] = ["t1_pre", "t1_gd", "bravo", "flair", "t2"];

/// Regions whose mean intensities the contrast test compares.
type Region = (&'static str, fn(Tissue) -> bool);

const REGIONS: [Region; 5] = [
    ("wm", |t| t == Tissue::WhiteMatter),
    ("gm", |t| t == Tissue::GreyMatter),
    ("csf", |t| t == Tissue::Csf),
    ("oedema", |t| t == Tissue::Oedema),
    ("tumour", Tissue::is_tumour),
];

fn config(shape: [usize; 3], spacing: [f64; 3], max_tumours: usize, seed: u64) -> PhantomConfig {
    PhantomConfig { shape, spacing: Spacing::from_dhw(spacing), max_tumours, seed }
}

/// A small 1 mm grid with room for tumours of every bin but the largest.
fn small_head() -> PhantomConfig {
    config([48, 80, 80], [1.0; 3], 3, 7)
}

fn bits(v: &Volume) -> Vec<u32> {
    v.data.iter().map(|x| x.to_bits()).collect()
}

fn same_bytes(a: &BTreeMap<String, Volume>, b: &BTreeMap<String, Volume>) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((ka, va), (kb, vb))| ka == kb && bits(va) == bits(vb))
}

/// 26-connected components of the voxels where `inside` holds, as lists of flat indices.
fn components(shape: [usize; 3], inside: impl Fn(usize) -> bool) -> Vec<Vec<usize>> {
    let [nd, nh, nw] = shape;
    let mut seen = vec![false; nd * nh * nw];
    let mut found = Vec::new();
    for start in 0..seen.len() {
        if seen[start] || !inside(start) {
            continue;
        }
        seen[start] = true;
        let mut stack = vec![start];
        let mut members = Vec::new();
        while let Some(i) = stack.pop() {
            members.push(i);
            let (d, h, w) = (i / (nh * nw), i / nw % nh, i % nw);
            for (dd, dh, dw) in neighbours() {
                let (Some(d2), Some(h2), Some(w2)) =
                    (d.checked_add_signed(dd), h.checked_add_signed(dh), w.checked_add_signed(dw))
                else {
                    continue;
                };
                if d2 >= nd || h2 >= nh || w2 >= nw {
                    continue;
                }
                let j = (d2 * nh + h2) * nw + w2;
                if !seen[j] && inside(j) {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        found.push(members);
    }
    found
}

fn neighbours() -> impl Iterator<Item = (isize, isize, isize)> {
    (-1..=1).flat_map(|d| (-1..=1).flat_map(move |h| (-1..=1).map(move |w| (d, h, w)))).filter(|&o| o != (0, 0, 0))
}

/// The flat index of the voxel containing a point in mm.
fn voxel_of(config: &PhantomConfig, p: [f64; 3]) -> Option<usize> {
    let s = config.spacing.dhw();
    let mut index = [0; 3];
    for k in 0..3 {
        let i = (p[k] / s[k]).floor();
        if i < 0.0 || i >= config.shape[k] as f64 {
            return None;
        }
        index[k] = i as usize;
    }
    Some((index[0] * config.shape[1] + index[1]) * config.shape[2] + index[2])
}

fn mean_where(v: &Volume, t: &TissueMap, keep: impl Fn(Tissue) -> bool) -> f64 {
    let (sum, n) =
        v.data.iter().zip(&t.data).filter(|(_, t)| keep(**t)).fold((0.0, 0), |(s, n), (x, _)| (s + *x as f64, n + 1));
    assert!(n > 0, "no voxels to average");
    sum / n as f64
}

#[test]
fn same_seed_same_bytes_and_different_seed_different_bytes() {
    let c = small_head();
    let a = generate(&c, 3, &ALL);
    let b = generate(&c, 3, &ALL);
    assert_eq!(a.id, b.id);
    assert_eq!(a.tumours, b.tumours);
    assert!(same_bytes(&a.modalities, &b.modalities));
    let other = generate(&PhantomConfig { seed: 8, ..c }, 3, &ALL);
    for name in ALL {
        if name != "seg" || !a.tumours.is_empty() || !other.tumours.is_empty() {
            assert_ne!(bits(&a.modalities[name]), bits(&other.modalities[name]), "{name}");
        }
    }
}

#[test]
fn a_patient_depends_only_on_seed_and_index() {
    let c = config([16, 32, 32], [4.0, 6.0, 6.0], 4, 11);
    let all: Vec<_> = (0..10).map(|i| generate(&c, i, &ALL)).collect();
    let alone = generate(&c, 3, &ALL);
    assert_eq!(all[3].tumours, alone.tumours);
    assert!(same_bytes(&all[3].modalities, &alone.modalities));
    assert_ne!(all[3].id, all[4].id);
    assert_ne!(bits(&all[3].modalities["t1_pre"]), bits(&all[4].modalities["t1_pre"]));
}

#[test]
fn fewer_modalities_leave_the_others_unchanged() {
    let c = small_head();
    let all = generate(&c, 5, &ALL);
    let some = generate(&c, 5, &["flair", "seg"]);
    assert_eq!(some.modalities.keys().collect::<Vec<_>>(), ["flair", "seg"]);
    for (name, volume) in &some.modalities {
        assert_eq!(bits(volume), bits(&all.modalities[name]), "{name}");
    }
}

#[test]
fn same_field_of_view_gives_the_same_tumours_at_any_resolution() {
    let fine = config([64, 96, 96], [1.0; 3], 4, 3);
    let coarse = config([32, 48, 48], [2.0; 3], 4, 3);
    for patient in 0..20 {
        assert_eq!(tumours(&fine, patient), tumours(&coarse, patient));
    }
}

#[test]
fn tumours_alone_match_the_generated_ones() {
    let c = small_head();
    for patient in 0..4 {
        assert_eq!(tumours(&c, patient), generate(&c, patient, &["seg"]).tumours);
    }
}

#[test]
fn seg_is_binary_and_its_components_are_the_tumours() {
    let c = small_head();
    let mut checked = 0;
    for patient in 0..8 {
        let p = generate(&c, patient, &["seg"]);
        let seg = &p.modalities["seg"];
        assert!(seg.data.iter().all(|&x| x == 0.0 || x == 1.0));
        let parts = components(c.shape, |i| seg.data[i] == 1.0);
        assert_eq!(parts.len(), p.tumours.len(), "patient {patient}: one component per tumour");
        let voxel = c.spacing.voxel_mm3();
        for tumour in &p.tumours {
            // The voxel holding the centre is within half a voxel diagonal (0.87 mm) of it, and
            // every radius is at least ELONGATION_MIN × TINY_MIN_MM / 2 = 1.4 mm.
            let centre = voxel_of(&c, tumour.centre_mm).expect("centre inside the volume");
            let part = parts.iter().find(|part| part.contains(&centre)).expect("the centre is in the mask");
            let expected = tumour.volume_mm3() / voxel;
            if tumour.radii_mm.iter().all(|&r| r >= 3.0) {
                let error = (part.len() as f64 - expected).abs() / expected;
                assert!(error < 0.15, "{} voxels for an ellipsoid of {expected:.0}", part.len());
                checked += 1;
            }
        }
    }
    assert!(checked >= 3, "too few well-sampled tumours to check volumes: {checked}");
}

#[test]
fn tumour_sizes_cover_the_rano_bm_bins_uniformly() {
    // A 160 × 256 × 256 mm field of view; only the tumours' parameters are drawn.
    let c = config([16, 32, 32], [10.0, 8.0, 8.0], 4, 2024);
    let all: Vec<Tumour> = (0..200).flat_map(|p| tumours(&c, p)).collect();
    let mut counts: BTreeMap<SizeBin, usize> = BTreeMap::new();
    for t in &all {
        *counts.entry(t.size_bin()).or_default() += 1;
    }
    eprintln!(
        "{} tumours over 200 patients: {}",
        all.len(),
        SizeBin::ALL.map(|b| format!("{} {}", b.name(), counts.get(&b).copied().unwrap_or(0))).join(", ")
    );
    assert!(all.len() > 300, "about two tumours per patient, got {}", all.len());
    for bin in SizeBin::ALL {
        let share = counts.get(&bin).copied().unwrap_or(0) as f64 / all.len() as f64;
        assert!((0.18..=0.32).contains(&share), "{}: {share:.2} of tumours", bin.name());
    }
    for t in &all {
        assert!((2.0 * t.radii_mm.iter().copied().fold(0.0, f64::max) - t.diameter_mm).abs() < 1e-9);
        assert_eq!(t.rim_enhancing, t.diameter_mm > 15.0);
    }
}

#[test]
fn small_fields_of_view_clamp_tumours_to_fit() {
    let c = config([16, 32, 32], [1.0; 3], 4, 1);
    let all: Vec<Tumour> = (0..100).flat_map(|p| tumours(&c, p)).collect();
    assert!(!all.is_empty());
    // The brain is about 11 mm deep and 23 mm across, so nothing medium or large fits.
    assert!(all.iter().all(|t| t.radii_mm[0] < 3.0 && t.diameter_mm < 12.0), "{all:?}");
}

#[test]
fn tumours_lie_inside_the_brain() {
    let c = small_head();
    for patient in 0..8 {
        let map = tissues(&c, patient);
        let brain =
            [Tissue::Csf, Tissue::GreyMatter, Tissue::WhiteMatter, Tissue::Oedema, Tissue::Enhancing, Tissue::Necrosis];
        for t in tumours(&c, patient) {
            for k in 0..3 {
                for sign in [-1.0, 1.0] {
                    let mut p = t.centre_mm;
                    p[k] += sign * (t.radii_mm[k] + 1.0);
                    let i = voxel_of(&c, p).expect("inside the volume");
                    assert!(brain.contains(&map.data[i]), "{:?} just outside a tumour", map.data[i]);
                }
            }
        }
        // No tumour voxel touches the skull, scalp or air.
        let [nd, nh, nw] = c.shape;
        for d in 1..nd - 1 {
            for h in 1..nh - 1 {
                for w in 1..nw - 1 {
                    if map.get(d, h, w).is_tumour() {
                        for (dd, dh, dw) in neighbours() {
                            let n = map.get(
                                d.wrapping_add_signed(dd),
                                h.wrapping_add_signed(dh),
                                w.wrapping_add_signed(dw),
                            );
                            assert!(brain.contains(&n), "a tumour voxel next to {n:?}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn seg_matches_the_tissue_map() {
    let c = small_head();
    let p = generate(&c, 1, &["seg"]);
    let map = tissues(&c, 1);
    for (x, t) in p.modalities["seg"].data.iter().zip(&map.data) {
        assert_eq!(*x == 1.0, t.is_tumour());
    }
}

#[test]
fn contrast_ordering_holds_on_average() {
    // A coarse grid over a full-size head, several patients, so every tissue is present.
    let c = config([32, 64, 64], [5.0, 4.0, 4.0], 4, 99);
    let mut means: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for patient in 0..6 {
        let p = generate(&c, patient, &IMAGES);
        let map = tissues(&c, patient);
        if !map.data.iter().any(|t| t.is_tumour()) {
            continue;
        }
        for name in IMAGES {
            let v = &p.modalities[name];
            for (region, keep) in REGIONS {
                means.entry((name, region)).or_default().push(mean_where(v, &map, keep));
            }
        }
    }
    let m = |name, region| {
        let all = &means[&(name, region)];
        all.iter().sum::<f64>() / all.len() as f64
    };
    assert!(m("t1_pre", "wm") > m("t1_pre", "gm") && m("t1_pre", "gm") > m("t1_pre", "csf"));
    assert!(m("t1_pre", "tumour") < m("t1_pre", "wm") && m("t1_pre", "oedema") < m("t1_pre", "wm"));
    assert!(m("t1_gd", "tumour") > m("t1_gd", "wm") + 0.1);
    assert!(m("bravo", "tumour") > m("bravo", "wm") && m("bravo", "wm") > m("bravo", "gm"));
    let gm_wm = |name| m(name, "wm") - m(name, "gm");
    assert!(gm_wm("bravo") > gm_wm("t1_gd"), "bravo has more grey/white contrast");
    assert!(m("flair", "oedema") > m("flair", "wm") && m("flair", "tumour") > m("flair", "wm"));
    assert!(m("flair", "csf") < m("flair", "wm"));
    assert!(m("t2", "csf") > m("t2", "wm") && m("t2", "oedema") > m("t2", "wm"));
}

#[test]
fn contrast_table_is_exposed_for_images_only() {
    assert_eq!(contrast("t1_pre", Tissue::Background), Some(0.0));
    assert!(contrast("t1_gd", Tissue::Enhancing) > contrast("t1_gd", Tissue::WhiteMatter));
    assert_eq!(contrast("seg", Tissue::Enhancing), None);
}

#[test]
fn values_lie_in_the_unit_interval() {
    let c = small_head();
    let p = generate(&c, 2, &ALL);
    for (name, v) in &p.modalities {
        assert!(v.data.iter().all(|x| (0.0..=1.0).contains(x)), "{name}");
        assert_eq!(v.shape, c.shape);
        assert_eq!(v.spacing, c.spacing);
    }
    // Noise: the air is not exactly zero, but dark.
    let t1 = &p.modalities["t1_pre"];
    let corner = t1.get(0, 0, 0);
    assert!(corner > 0.0 && corner < 0.2, "{corner}");
}

#[test]
fn anisotropic_spacing_gives_physical_sizes() {
    // The same 72 × 96 × 96 mm field of view: 3 mm slices against 1 mm isotropic.
    let thick = config([24, 96, 96], [3.0, 1.0, 1.0], 3, 5);
    let iso = config([72, 96, 96], [1.0; 3], 3, 5);
    let mut checked = 0;
    for patient in 0..6 {
        let a = generate(&thick, patient, &["seg"]);
        let b = generate(&iso, patient, &["seg"]);
        assert_eq!(a.tumours, b.tumours);
        let thick_parts = components(thick.shape, |i| a.modalities["seg"].data[i] == 1.0);
        let iso_parts = components(iso.shape, |i| b.modalities["seg"].data[i] == 1.0);
        for t in &a.tumours {
            let part_of = |c: &PhantomConfig, parts: &[Vec<usize>]| {
                let centre = voxel_of(c, t.centre_mm).expect("centre inside");
                parts.iter().find(|p| p.contains(&centre)).cloned()
            };
            let Some(part) = part_of(&thick, &thick_parts) else { continue };
            let slices = part.iter().map(|i| i / (96 * 96)).collect::<BTreeSet<_>>().len();
            let columns = part.iter().map(|i| i % 96).collect::<BTreeSet<_>>().len();
            let (depth, width) = (2.0 * t.radii_mm[0] / 3.0, 2.0 * t.radii_mm[2]);
            assert!((slices as f64 - depth).abs() <= 1.0, "{slices} slices for {depth:.1}");
            assert!((columns as f64 - width).abs() <= 1.0, "{columns} columns for {width:.1}");
            if t.radii_mm[0] >= 6.0 {
                let thick_mm3 = part.len() as f64 * thick.spacing.voxel_mm3();
                let iso_mm3 = part_of(&iso, &iso_parts).expect("isotropic part").len() as f64;
                for mm3 in [thick_mm3, iso_mm3] {
                    let error = (mm3 - t.volume_mm3()).abs() / t.volume_mm3();
                    assert!(error < 0.2, "{mm3:.0} mm³ for an ellipsoid of {:.0}", t.volume_mm3());
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 2, "too few thick tumours to check: {checked}");
}

#[test]
fn small_shapes_work() {
    for shape in [[16, 32, 32], [8, 16, 16], [1, 32, 32]] {
        let c = config(shape, [1.0; 3], 2, 0);
        for patient in 0..4 {
            let map = tissues(&c, patient);
            let p = generate(&c, patient, &ALL);
            for v in p.modalities.values() {
                assert_eq!(v.data.len(), shape.iter().product::<usize>());
            }
            let [d, h, w] = shape.map(|n| n / 2);
            assert_ne!(map.get(d, h, w), Tissue::Background, "{shape:?}: the centre is in the head");
            assert_eq!(map.get(0, 0, 0), Tissue::Background, "{shape:?}: the corner is air");
        }
    }
}

#[test]
fn a_slice_cuts_every_tumour_through_its_middle() {
    // A 2D dataset: one 240 × 240 mm axial slice.
    let c = config([1, 96, 96], [1.0, 2.5, 2.5], 4, 13);
    let mut checked = 0;
    for patient in 0..10 {
        let p = generate(&c, patient, &["seg"]);
        let parts = components(c.shape, |i| p.modalities["seg"].data[i] == 1.0);
        assert_eq!(parts.len(), p.tumours.len(), "patient {patient}");
        for t in &p.tumours {
            assert_eq!(t.centre_mm[0], 0.5);
            assert_eq!(t.diameter_mm, 2.0 * t.radii_mm[1].max(t.radii_mm[2]), "the longest axis is in plane");
            let centre = voxel_of(&c, t.centre_mm).expect("centre inside");
            let part = parts.iter().find(|part| part.contains(&centre)).expect("the centre is in the mask");
            let expected = std::f64::consts::PI * t.radii_mm[1] * t.radii_mm[2] / (2.5 * 2.5);
            if t.radii_mm[1].min(t.radii_mm[2]) >= 7.5 {
                let error = (part.len() as f64 - expected).abs() / expected;
                assert!(error < 0.15, "{} pixels for an ellipse of {expected:.0}", part.len());
                checked += 1;
            }
        }
    }
    assert!(checked >= 3, "too few large tumours to check areas: {checked}");
}

#[test]
fn anatomy_has_every_tissue_in_a_full_size_head() {
    let c = config([40, 64, 64], [4.0, 4.0, 4.0], 0, 4);
    let map = tissues(&c, 0);
    for t in [Tissue::Background, Tissue::Scalp, Tissue::Skull, Tissue::Csf, Tissue::GreyMatter, Tissue::WhiteMatter] {
        assert!(map.data.contains(&t), "{t:?}");
    }
    assert!(!map.data.iter().any(|t| t.is_tumour() || *t == Tissue::Oedema));
    // Ventricles: CSF at the centre's height, either side of the midline.
    let row = (0..64).map(|w| map.get(22, 31, w)).collect::<Vec<_>>();
    assert!(row[20..44].contains(&Tissue::Csf), "{row:?}");
}

#[test]
#[should_panic(expected = "unknown modality")]
fn unknown_modalities_panic() {
    generate(&config([8, 16, 16], [1.0; 3], 1, 0), 0, &["pd"]);
}

/// Timing, in release: `cargo test --release -p medgen-stdlib --test phantom -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn generation_time() {
    for (shape, runs) in [([16, 32, 32], 100), ([160, 256, 256], 3)] {
        let c = config(shape, [1.0; 3], 4, 1);
        let start = Instant::now();
        for patient in 0..runs {
            generate(&c, patient, &ALL);
        }
        let each = start.elapsed() / runs as u32;
        eprintln!("{shape:?}: {each:?} per patient, 5 images + seg, {} threads", rayon::current_num_threads());
    }
}
