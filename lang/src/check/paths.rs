//! Files and directories a pipeline names — a `nifti` dataset's `dir`, pretrained weights, a
//! shell stage's `inputs` — must be there when it is checked. The engine hashes their contents
//! into cache keys only when it computes a stage's key, which for a stage below a training is
//! after that training; so without this check a misspelt weights path of an evaluation would
//! be found hours late. Relative paths start in the root pipeline file's directory, as the
//! engine resolves them.
//!
//! Only metadata is read, and a file is opened only when it is a regular file: a FIFO or a
//! device named by mistake is refused, never read.

use std::io::ErrorKind as IoKind;
use std::path::Path;

use crate::signature::{PathKind, PathParam};

/// Why `param` cannot be used, or `None` when it names a readable file or directory of its kind.
pub(super) fn unreadable(base: &Path, param: &PathParam) -> Option<String> {
    let path = base.join(&param.path);
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == IoKind::NotFound => return Some("does not exist".into()),
        Err(e) => return Some(format!("cannot be read ({e})")),
    };
    let is_file = meta.is_file();
    let is_dir = meta.is_dir();
    match param.kind {
        PathKind::File if is_dir => return Some("is a directory, not a file".into()),
        PathKind::Dir if is_file => return Some("is a file, not a directory".into()),
        _ if !is_file && !is_dir => return Some("is neither a regular file nor a directory".into()),
        _ => {}
    }
    let opened = if is_file { std::fs::File::open(&path).map(drop) } else { std::fs::read_dir(&path).map(drop) };
    opened.err().map(|e| format!("cannot be read ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(path: &str, kind: PathKind) -> PathParam {
        PathParam { position: "p".into(), path: path.into(), kind }
    }

    #[test]
    fn existing_paths_of_their_kind_pass_and_others_say_why() {
        let dir = std::env::temp_dir().join(format!("medgen-paths-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("w.safetensors"), b"x").unwrap();
        assert_eq!(unreadable(&dir, &param("w.safetensors", PathKind::File)), None);
        assert_eq!(unreadable(&dir, &param("sub", PathKind::Dir)), None);
        assert_eq!(unreadable(&dir, &param("sub", PathKind::Any)), None);
        assert_eq!(unreadable(&dir, &param("w.safetensors", PathKind::Any)), None);
        assert_eq!(unreadable(&dir, &param("missing", PathKind::File)).as_deref(), Some("does not exist"));
        assert_eq!(unreadable(&dir, &param("sub", PathKind::File)).as_deref(), Some("is a directory, not a file"));
        assert_eq!(
            unreadable(&dir, &param("w.safetensors", PathKind::Dir)).as_deref(),
            Some("is a file, not a directory")
        );
        assert_eq!(
            unreadable(Path::new("/"), &param("dev/null", PathKind::Any)).as_deref(),
            Some("is neither a regular file nor a directory")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
