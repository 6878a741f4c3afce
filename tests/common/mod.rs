//! What the end-to-end tests of the `medgen` binary share: a fresh project directory holding a
//! pipeline, the binary run there on the CPU, and what it printed on stderr.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A new, empty `medgen-SUITE-PID-NAME` directory under the system's temp dir with `p.mg`.
pub fn project(suite: &str, name: &str, pipeline: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medgen-{suite}-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create the project dir");
    fs::write(dir.join("p.mg"), pipeline).expect("write the pipeline");
    dir
}

/// `medgen ARGS` in `dir`, on the CPU.
pub fn medgen(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medgen"))
        .args(args)
        .current_dir(dir)
        .env("MEDGEN_DEVICE", "cpu")
        .output()
        .expect("run medgen")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The committed object directory (`out/`, `manifest.json`, `key.json`) of `instance` in the
/// store `store`.
pub fn object(store: &Path, instance: &str) -> PathBuf {
    for entry in fs::read_dir(store.join("objects")).expect("the store's objects") {
        let object = entry.expect("an object").path();
        let key: serde_json::Value =
            serde_json::from_slice(&fs::read(object.join("key.json")).expect("key.json")).expect("key.json is JSON");
        if key["instance"] == instance {
            return object;
        }
    }
    panic!("no output of {instance} in {}", store.display())
}
