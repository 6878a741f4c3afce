//! Fixture tests of the language: every file under `tests/fixtures/lang/ok` checks clean, and
//! every file under `tests/fixtures/lang/err` produces exactly the diagnostics its comments
//! announce. A line ending in `# expect: E0102` (several codes: `# expect: E0102 E0114`) must
//! get a diagnostic of each code whose span starts on that line; no other diagnostic may
//! appear. `# set: STAGE.PARAM=VALUE` lines pass overrides, as `--set` would. The rendered
//! diagnostics of each error fixture, and the resolved parameters of each clean one, are
//! snapshots (insta) under `tests/snapshots/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use medgen_lang::check::{check_file, Report};
use medgen_stdlib::StdRegistry;

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new("tests/fixtures/lang").join(dir))
        .expect("fixture directory exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "mg"))
        .collect();
    files.sort();
    files
}

/// `# set:` overrides and `# expect:` annotations (line number → codes) of a fixture.
fn annotations(text: &str) -> (Vec<String>, BTreeMap<usize, Vec<String>>) {
    let mut sets = Vec::new();
    let mut expects: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.trim_start().strip_prefix("# set:") {
            sets.push(rest.trim().to_string());
        }
        if let Some((_, codes)) = line.split_once("# expect:") {
            expects.entry(i + 1).or_default().extend(codes.split_whitespace().map(str::to_string));
        }
    }
    (sets, expects)
}

fn check(path: &Path) -> (Report, BTreeMap<usize, Vec<String>>) {
    let text = std::fs::read_to_string(path).expect("fixture readable");
    let (sets, expects) = annotations(&text);
    (check_file(path, &sets, &StdRegistry::new()), expects)
}

fn snapshot_name(path: &Path) -> String {
    path.file_stem().expect("file name").to_string_lossy().into_owned()
}

#[test]
fn clean_fixtures_check_clean() {
    let files = fixtures("ok");
    assert!(!files.is_empty(), "no clean fixtures found");
    for path in files {
        let (report, _) = check(&path);
        let rendered: Vec<String> = report.diagnostics.iter().map(|d| d.render(&report.sources, false)).collect();
        assert!(report.diagnostics.is_empty(), "{} should check clean:\n{}", path.display(), rendered.join("\n"));
        let pipeline = report.pipeline.expect("a clean check yields a pipeline");
        let mut summary = String::new();
        for stage in &pipeline.stages {
            for instance in &stage.instances {
                summary.push_str(&format!("{} = {}\n", instance.name(&stage.name), stage.kind));
                for (name, param) in &instance.params {
                    summary.push_str(&format!("  {name} = {}  ({:?})\n", param.value, param.origin));
                }
                let values: Vec<String> = instance
                    .outputs
                    .fields
                    .iter()
                    .filter_map(|(k, f)| match f {
                        medgen_lang::signature::Field::Value(v) => Some(format!("{k}: {v}")),
                        _ => None,
                    })
                    .collect();
                summary.push_str(&format!("  outputs: {}\n", values.join(", ")));
            }
        }
        insta::with_settings!({ snapshot_path => "snapshots/ok", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(snapshot_name(&path), summary);
        });
    }
}

#[test]
fn error_fixtures_report_exactly_what_they_announce() {
    let files = fixtures("err");
    assert!(!files.is_empty(), "no error fixtures found");
    for path in files {
        let (report, expects) = check(&path);
        assert!(!expects.is_empty(), "{} announces no `# expect:`", path.display());
        let mut found: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for d in &report.diagnostics {
            let span =
                d.span.unwrap_or_else(|| panic!("{}: diagnostic without a place: {}", path.display(), d.message));
            let line = report.sources.get(span.file).line_col(span.start).0;
            found.entry(line).or_default().push(d.code.id.to_string());
        }
        for codes in found.values_mut().chain(expects.clone().values_mut()) {
            codes.sort();
        }
        let mut expected = expects.clone();
        expected.values_mut().for_each(|c| c.sort());
        let rendered: Vec<String> = report.diagnostics.iter().map(|d| d.render(&report.sources, false)).collect();
        assert_eq!(
            found,
            expected,
            "{}: diagnostics by line differ from `# expect:`\n{}",
            path.display(),
            rendered.join("\n")
        );
        insta::with_settings!({ snapshot_path => "snapshots/err", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(snapshot_name(&path), rendered.join("\n"));
        });
    }
}

#[test]
fn every_code_has_an_error_fixture() {
    let registry = StdRegistry::new();
    let mut announced = std::collections::BTreeSet::new();
    for path in fixtures("err") {
        let text = std::fs::read_to_string(&path).expect("fixture readable");
        announced.extend(annotations(&text).1.into_values().flatten());
    }
    let domain = medgen_lang::signature::Registry::codes(&registry);
    let codes = medgen_lang::errors::ALL.iter().chain(domain.iter());
    let internal: Vec<&str> = medgen_lang::errors::INTERNAL.iter().map(|c| c.id).collect();
    let missing: Vec<&str> =
        codes.map(|c| c.id).filter(|id| !announced.contains(*id) && !internal.contains(id)).collect();
    assert!(missing.is_empty(), "codes without an error fixture: {missing:?}");
}
