//! The data path end to end: a `phantom` dataset written through `medgen run`, read back by
//! the loader in every view and mode; the same files read as a `nifti` dataset, in another
//! orientation and elsewhere in the world, whose volumes and samples keep their patient's place;
//! and the errors a hand-made folder with a truncated file, a missing modality and a shape
//! mismatch must produce.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Device;
use medgen_stdlib::data::layout::{volume_path, DatasetMeta};
use medgen_stdlib::data::loader::{Axis, Loader, Mode, View};
use medgen_stdlib::data::volume::{Origin, Spacing};
use medgen_stdlib::io::nifti::{load_nifti, load_nifti_ras, save_nifti};
use medgen_stdlib::split::Split;

struct Project {
    dir: PathBuf,
}

impl Project {
    fn new(name: &str) -> Project {
        let dir = std::env::temp_dir().join(format!("medgen-data-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Project { dir }
    }

    fn medgen(&self, args: &[&str]) -> Output {
        let store = self.dir.join("store");
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--store", store.to_str().expect("utf-8 path")]);
        Command::new(env!("CARGO_BIN_EXE_medgen")).args(&all).current_dir(&self.dir).output().expect("medgen runs")
    }

    /// Runs `pipeline` and returns the output directory of its stage `stage`.
    fn run(&self, pipeline: &str, stage: &str) -> PathBuf {
        std::fs::write(self.dir.join("p.mg"), pipeline).expect("write pipeline");
        let o = self.medgen(&["run", "p.mg"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let show = self.medgen(&["show", stage, "--pipeline", "p.mg"]);
        let text = String::from_utf8_lossy(&show.stdout).into_owned();
        let line = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("output:"))
            .unwrap_or_else(|| panic!("no output in {text}"));
        PathBuf::from(line.trim())
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const PHANTOM: &str = "pipeline data\n\ndataset brain = phantom {\n  volumes    = 12\n  shape      = [8, 16, 16]\n  modalities = [t1_pre, t1_gd, flair, seg]\n  tumours    = 3\n  seed       = 5\n}\n";

#[test]
fn the_phantom_is_deterministic_and_splits_by_patient() {
    let a = Project::new("phantom-a");
    let b = Project::new("phantom-b");
    let (da, db) = (a.run(PHANTOM, "brain"), b.run(PHANTOM, "brain"));
    let meta = DatasetMeta::read(&da).expect("dataset.json");
    assert_eq!(meta, DatasetMeta::read(&db).expect("dataset.json"));
    assert_eq!(meta.shape, [8, 16, 16]);
    assert_eq!(meta.patients.len(), 12);
    for p in &meta.patients {
        for m in &meta.modalities {
            let (x, y) = (volume_path(&da, &p.id, m), volume_path(&db, &p.id, m));
            assert_eq!(
                std::fs::read(&x).expect("volume"),
                std::fs::read(&y).expect("volume"),
                "{} differs",
                x.display()
            );
        }
    }
    let splits: Vec<BTreeSet<&str>> =
        Split::ALL.iter().map(|s| meta.split(*s).map(|p| p.id.as_str()).collect()).collect();
    assert!(splits.iter().all(|s| !s.is_empty()), "{splits:?}");
    assert_eq!(splits.iter().map(BTreeSet::len).sum::<usize>(), 12);
    assert!(
        splits[0].is_disjoint(&splits[1]) && splits[0].is_disjoint(&splits[2]) && splits[1].is_disjoint(&splits[2])
    );
}

fn loader(dir: &Path, mode: Mode, view: View, batch: usize) -> Loader {
    Loader::new(dir, Split::Train, mode, view, batch, 3, Device::Cpu).expect("loader")
}

#[test]
fn batches_have_the_channels_and_shapes_of_each_mode_and_view() {
    let p = Project::new("views");
    let dir = p.run(PHANTOM, "brain");
    let train = DatasetMeta::read(&dir).expect("meta").split(Split::Train).count();

    let volumes = loader(&dir, Mode::Dual, View::Volumes, 2);
    let batch = volumes.epoch(0).next().expect("a batch").expect("readable");
    assert_eq!(batch.images.dims(), [2, 2, 8, 16, 16]);
    assert_eq!(batch.condition.as_ref().expect("dual is conditioned on seg").dims(), [2, 1, 8, 16, 16]);
    assert_eq!(volumes.len(), train);

    let slices = loader(&dir, Mode::Dual, View::Slices { axis: Axis::Depth, drop_empty: false }, 4);
    assert_eq!(slices.len(), train * 8);
    let batch = slices.epoch(0).next().expect("a batch").expect("readable");
    assert_eq!(batch.images.dims(), [4, 2, 16, 16]);

    let coronal = loader(&dir, Mode::Seg, View::Slices { axis: Axis::Height, drop_empty: false }, 3);
    let batch = coronal.epoch(0).next().expect("a batch").expect("readable");
    assert_eq!(batch.images.dims(), [3, 1, 8, 16]);
    assert!(batch.condition.is_none());

    let dropped = loader(&dir, Mode::Dual, View::Slices { axis: Axis::Depth, drop_empty: true }, 4);
    assert!(dropped.len() <= train * 8);

    let bins = loader(&dir, Mode::SegConditioned, View::Volumes, 1);
    let meta = DatasetMeta::read(&dir).expect("meta");
    for batch in bins.epoch(0) {
        let batch = batch.expect("readable");
        let id = &batch.origins[0].0;
        let patient = meta.patients.iter().find(|p| &p.id == id).expect("known patient");
        let counted: f32 =
            batch.size_bins.expect("size bins").sum_all().and_then(|t| t.to_scalar::<f32>()).expect("sum");
        assert_eq!(counted as usize, patient.tumours.len(), "{id}");
    }
}

#[test]
fn multi_batches_hold_one_modality_and_epochs_are_seeded() {
    let p = Project::new("multi");
    let dir = p.run(PHANTOM, "brain");
    let multi = loader(&dir, Mode::Multi, View::Slices { axis: Axis::Depth, drop_empty: false }, 5);
    let mut seen = BTreeSet::new();
    for batch in multi.epoch(0) {
        let batch = batch.expect("readable");
        seen.insert(batch.mode_id.expect("multi batches name their modality"));
        assert_eq!(batch.images.dims()[1], 1);
    }
    assert_eq!(seen, BTreeSet::from([0, 1, 2]), "t1_pre, t1_gd and flair all appear");
    let order = |l: &Loader, epoch| -> Vec<(String, Option<usize>)> {
        l.epoch(epoch).flat_map(|b| b.expect("readable").origins).collect()
    };
    assert_eq!(order(&multi, 0), order(&multi, 0), "the same epoch gives the same order");
    assert_ne!(order(&multi, 0), order(&multi, 1), "another epoch shuffles differently");
}

#[test]
fn a_nifti_folder_reads_like_the_phantom_and_its_problems_are_all_named() {
    let p = Project::new("nifti");
    let phantom = p.run(PHANTOM, "brain");
    // A user's folder in the same layout: copy the phantom's files.
    let user = p.dir.join("mets");
    let meta = DatasetMeta::read(&phantom).expect("meta");
    copy_volumes(&phantom, &user, &meta);
    let nifti = "pipeline data\n\ndataset mets = nifti {\n  dir        = \"mets\"\n  modalities = [t1_pre, t1_gd, seg]\n  shape      = [8, 12, 20]\n}\n";
    let out = p.run(nifti, "mets");
    let read = DatasetMeta::read(&out).expect("meta");
    assert_eq!(read.shape, [8, 12, 20], "cropped in height, padded in width");
    assert_eq!(read.patients.len(), 12);
    let batch = loader(&out, Mode::Dual, View::Volumes, 2).epoch(0).next().expect("a batch").expect("readable");
    assert_eq!(batch.images.dims(), [2, 2, 8, 12, 20]);

    // Break three patients: a truncated file, a missing modality, a shape mismatch.
    let ids: Vec<&str> = meta.patients.iter().map(|p| p.id.as_str()).collect();
    let truncated = volume_path(&user, ids[0], "t1_gd");
    let bytes = std::fs::read(&truncated).expect("read");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("truncate");
    std::fs::remove_file(volume_path(&user, ids[1], "seg")).expect("remove");
    std::fs::copy(volume_path(&phantom, ids[3], "t1_pre"), volume_path(&user, ids[2], "t1_pre")).expect("copy");
    let other = "pipeline data\n\ndataset small = phantom {\n  volumes = 1\n  shape = [8, 16, 12]\n  modalities = [t1_pre]\n}\n";
    let small = p.run(other, "small");
    std::fs::copy(volume_path(&small, "p0000", "t1_pre"), volume_path(&user, ids[2], "t1_pre")).expect("copy");
    std::fs::write(p.dir.join("p.mg"), nifti).expect("write");
    let o = p.medgen(&["run", "p.mg"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("3 problems in"), "{err}");
    assert!(err.contains(&format!("{}/t1_gd.nii.gz", ids[0])), "the truncated file is named: {err}");
    assert!(err.contains(&format!("{}/seg.nii.gz: missing", ids[1])), "the missing modality is named: {err}");
    assert!(err.contains(&format!("{}/t1_pre.nii.gz: shape", ids[2])), "the mismatched file is named: {err}");
}

#[test]
fn nifti_patients_of_another_spacing_or_shape_are_refused_by_name_not_relabelled() {
    let p = Project::new("geometry");
    let phantom = p.run(PHANTOM, "brain");
    let user = p.dir.join("mets");
    let meta = DatasetMeta::read(&phantom).expect("meta");
    copy_volumes(&phantom, &user, &meta);
    let id = meta.patients[4].id.clone();
    // One patient rewritten at 2 mm voxels: the dataset must not call it 1 mm.
    for m in &meta.modalities {
        let path = volume_path(&user, &id, m);
        let mut volume = load_nifti(&path).expect("a phantom volume");
        volume.spacing = Spacing::from_dhw([2.0, 2.0, 2.0]);
        save_nifti(&path, &volume).expect("rewrite");
    }
    let run = |pipeline: &str| {
        std::fs::write(p.dir.join("p.mg"), pipeline).expect("write");
        let o = p.medgen(&["run", "p.mg"]);
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let files = "pipeline data\n\ndataset mets = nifti {\n  dir        = \"mets\"\n  modalities = [t1_pre, seg]\n}\n";
    let (code, err) = run(files);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains(&format!("patient {id}: voxel spacing [2.0, 2.0, 2.0] mm")), "{err}");
    let declared =
        files.replace("modalities = [t1_pre, seg]", "modalities = [t1_pre, seg]\n  spacing    = [2.0, 2.0, 2.0]");
    let (code, err) = run(&declared);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(
        err.matches("not the declared `spacing` [2.0, 2.0, 2.0] mm").count(),
        11,
        "every 1 mm patient is named: {err}"
    );
    assert!(!err.contains(&format!("patient {id}:")), "the 2 mm patient has the declared spacing: {err}");
}

/// Rewrites `path` (a `.nii.gz`) as a `.nii` beside it holding the same anatomy in another voxel
/// order: x and y reversed, with an sform whose x and y columns point to L and P (DICOM's LPS),
/// or, with `oblique`, an sform rotated by 10° about z; its voxel (0, 0, 0) at `translation`
/// (x, y, z, mm).
fn rewrite_oriented(path: &Path, oblique: bool, translation: [f32; 3]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut volume = load_nifti(path).expect("a phantom volume");
    let [depth, height, width] = volume.shape;
    if !oblique {
        let original = volume.data.clone();
        for z in 0..depth {
            for y in 0..height {
                for x in 0..width {
                    volume.data[(z * height + y) * width + x] =
                        original[(z * height + (height - 1 - y)) * width + (width - 1 - x)];
                }
            }
        }
    }
    let plain = path.with_extension("");
    std::fs::remove_file(path).expect("remove the .nii.gz");
    save_nifti(&plain, &volume).expect("write the .nii");
    let (s, c) = 10f32.to_radians().sin_cos();
    let [sd, sh, sw] = volume.spacing.dhw().map(|v| v as f32);
    let [tx, ty, tz] = translation;
    let (row_x, row_y) = if oblique {
        ([c * sw, -s * sh, 0.0, tx], [s * sw, c * sh, 0.0, ty])
    } else {
        ([-sw, 0.0, 0.0, tx], [0.0, -sh, 0.0, ty])
    };
    let mut file = std::fs::OpenOptions::new().write(true).open(&plain).expect("open the .nii");
    for (offset, row) in [(280u64, row_x), (296, row_y), (312, [0.0, 0.0, sd, tz])] {
        file.seek(SeekFrom::Start(offset)).expect("seek");
        let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
        file.write_all(&bytes).expect("patch the sform");
    }
}

#[test]
fn nifti_volumes_are_brought_to_one_orientation_and_oblique_ones_are_refused() {
    let p = Project::new("orientation");
    let phantom = p.run(PHANTOM, "brain");
    let meta = DatasetMeta::read(&phantom).expect("meta");
    let id = meta.patients[2].id.clone();
    let read = |folder: &str| {
        let user = p.dir.join(folder);
        copy_volumes(&phantom, &user, &meta);
        user
    };
    read("as_is");
    let lps = read("lps");
    for m in &meta.modalities {
        rewrite_oriented(&volume_path(&lps, &id, m), false, [0.0; 3]);
    }
    let pipeline = |folder: &str| {
        format!("pipeline data\n\ndataset mets = nifti {{\n  dir        = \"{folder}\"\n  modalities = [t1_pre, t1_gd, seg]\n}}\n")
    };
    let reference = p.run(&pipeline("as_is"), "mets");
    let reoriented = p.run(&pipeline("lps"), "mets");
    for m in ["t1_pre", "t1_gd", "seg"] {
        let expected = load_nifti(&volume_path(&reference, &id, m)).expect("as read from RAS files");
        let found = load_nifti(&volume_path(&reoriented, &id, m)).expect("as read from LPS files");
        assert_eq!(found, expected, "{m}: the LPS files of patient {id} read as the same RAS volume");
    }

    let oblique = read("oblique");
    rewrite_oriented(&volume_path(&oblique, &id, "t1_gd"), true, [0.0; 3]);
    std::fs::write(p.dir.join("p.mg"), pipeline("oblique")).expect("write");
    let o = p.medgen(&["run", "p.mg"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains(&format!("{id}/t1_gd.nii: oblique voxel grid")), "the oblique file is named: {err}");
}

#[test]
fn nifti_volumes_and_the_samples_conditioned_on_them_keep_their_patients_place_in_the_world() {
    let p = Project::new("origin");
    let phantom = p.run(PHANTOM, "brain");
    let meta = DatasetMeta::read(&phantom).expect("meta");
    let [_, sh, sw] = meta.spacing;
    let user = p.dir.join("mets");
    copy_volumes(&phantom, &user, &meta);
    // Patient i in LPS order, its voxel (0, 0, 0) at (10 + i, -20 - 2i, 30 + 0.5i) mm.
    let translation = |i: usize| [10.0 + i as f32, -20.0 - 2.0 * i as f32, 30.0 + 0.5 * i as f32];
    for (i, patient) in meta.patients.iter().enumerate() {
        for m in ["t1_pre", "t1_gd", "seg"] {
            rewrite_oriented(&volume_path(&user, &patient.id, m), false, translation(i));
        }
    }
    let pipeline = "pipeline origin\n\ndataset mets = nifti {\n  dir        = \"mets\"\n  modalities = [t1_pre, t1_gd, seg]\n  shape      = [8, 12, 20]\n}\nstage ldm = diffuse(mets) {\n  mode   = dual\n  model  = unet(dims: 2, channels: [8, 16], attention: [false, false], res_blocks: 1)\n  epochs = 1\n  batch  = 8\n}\nstage gen = sample(ldm, conditions: mets.test) {\n  count  = 2\n  solver = euler(steps: 2)\n}\n";
    let dataset = p.run(pipeline, "mets");
    let written = DatasetMeta::read(&dataset).expect("meta");
    for (i, patient) in written.patients.iter().enumerate() {
        // RAS voxel 0 was the LPS file's last voxel in x and y, 15 voxels towards L and P of its
        // first; cropping height 16 -> 12 moves it 2 voxels towards A, padding width 16 -> 20 2
        // towards L.
        let [tx, ty, tz] = translation(i).map(f64::from);
        let expected = Origin { x: tx - 15.0 * sw - 2.0 * sw, y: ty - 15.0 * sh + 2.0 * sh, z: tz };
        assert_eq!(patient.origin, expected, "{}: dataset.json", patient.id);
        for m in ["t1_pre", "t1_gd", "seg"] {
            let (_, origin) = load_nifti_ras(&volume_path(&dataset, &patient.id, m)).expect("a written volume");
            assert_eq!(origin, expected, "{}/{m}: the written affine", patient.id);
        }
    }

    let samples = p.run(pipeline, "gen");
    let records: serde_json::Value =
        serde_json::from_slice(&std::fs::read(samples.join("samples.json")).expect("samples.json")).expect("JSON");
    let records = records.as_array().expect("a list of samples");
    assert_eq!(records.len(), 2);
    for record in records {
        let (name, condition) = (record["name"].as_str().expect("name"), record["condition"].as_str().expect("id"));
        let patient = written.patients.iter().find(|p| p.id == condition).expect("a conditioning patient");
        assert_ne!(patient.origin, Origin::ZERO);
        for m in ["t1_pre", "t1_gd", "seg"] {
            let (_, origin) = load_nifti_ras(&volume_path(&samples, name, m)).expect("a sample volume");
            assert_eq!(origin, patient.origin, "{name}/{m}: at patient {condition}'s origin");
        }
    }

    // One modality of a patient left where the phantom put it, away from the others: refused by name.
    let moved = &meta.patients[3].id;
    let gd = volume_path(&user, moved, "t1_gd");
    std::fs::remove_file(gd.with_extension("")).expect("remove the rewritten .nii");
    std::fs::copy(volume_path(&phantom, moved, "t1_gd"), &gd).expect("copy");
    std::fs::write(p.dir.join("p.mg"), pipeline).expect("write");
    let o = p.medgen(&["run", "p.mg"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("1 problem in"), "{err}");
    assert!(err.contains(&format!("{moved}/t1_gd.nii.gz: voxel (0, 0, 0) lies at")), "the file is named: {err}");
}

/// Copies a dataset directory's volumes into a user folder in the same layout.
fn copy_volumes(from: &Path, to: &Path, meta: &DatasetMeta) {
    for patient in &meta.patients {
        std::fs::create_dir_all(to.join(&patient.id)).expect("patient folder");
        for m in &meta.modalities {
            std::fs::copy(volume_path(from, &patient.id, m), volume_path(to, &patient.id, m)).expect("copy");
        }
    }
}

#[test]
fn tumours_measured_from_nifti_masks_are_the_ones_the_phantom_drew() {
    let p = Project::new("tumours");
    let big = "pipeline data\n\ndataset brain = phantom {\n  volumes    = 16\n  shape      = [48, 64, 64]\n  modalities = [t1_gd, seg]\n  tumours    = 4\n  seed       = 2\n}\n";
    let phantom = p.run(big, "brain");
    let meta = DatasetMeta::read(&phantom).expect("meta");
    copy_volumes(&phantom, &p.dir.join("mets"), &meta);
    let nifti = "pipeline data\n\ndataset mets = nifti {\n  dir        = \"mets\"\n  modalities = [t1_gd, seg]\n}\n";
    let measured = DatasetMeta::read(&p.run(nifti, "mets")).expect("meta");
    let total: usize = meta.patients.iter().map(|p| p.tumours.len()).sum();
    assert!(total >= 8, "too few tumours to compare: {total}");
    for (drawn, found) in meta.patients.iter().zip(&measured.patients) {
        assert_eq!(drawn.tumours.len(), found.tumours.len(), "{}: tumour count", drawn.id);
        let mut sizes: Vec<f64> = drawn.tumours.iter().map(|t| t.diameter_mm).collect();
        sizes.sort_by(|x, y| y.total_cmp(x));
        for (x, y) in sizes.iter().zip(found.tumours.iter().map(|t| t.diameter_mm)) {
            // Voxel centres at 1 mm cannot reach an ellipsoid's exact extent: within two voxels.
            assert!((x - y).abs() <= 2.0, "{}: drawn {x:.1} mm, measured {y:.1} mm", drawn.id);
        }
    }
}
