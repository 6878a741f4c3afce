//! Reading a pipeline file, the root one or one it `use`s, from disk. A path in a pipeline may
//! name anything, and the checker must answer in bounded time and memory whatever it names, so:
//!
//! - only a regular file is opened: a directory, FIFO, device or socket is refused from its
//!   metadata (opening a FIFO blocks until a writer comes; `/dev/zero` and `/dev/urandom` never
//!   end). The opened file is looked at again, in case the path was replaced in between;
//! - at most [`MAX_FILE_BYTES`] are read, through `take`, so a file that grows while it is read
//!   (a log) is still refused rather than read without end;
//! - the bytes must be text: UTF-8 without NUL bytes. A file that is not is reported with the
//!   line and byte of the first offending byte, and never shown, since it is not a pipeline
//!   (see `docs/language.md`, "Files").

use std::fs::{File, FileType};
use std::io::Read;
use std::path::Path;

use crate::errors::FileProblem;

/// The largest pipeline file read, in bytes. Files written by hand are a few kilobytes (the
/// largest example is under 10); the limit leaves room for generated ones while refusing at
/// once an image, a checkpoint or a log named by mistake.
pub const MAX_FILE_BYTES: usize = 16 << 20;

/// The text of the pipeline file at `path`, or why it cannot be one. A `use`d file is read
/// only when it is named `.mg`: `used` is the path as written and where it leads, symlinks
/// resolved; the root file is taken as named on the command line.
pub(super) fn read_pipeline(path: &Path, used: Option<&Path>) -> Result<String, FileProblem> {
    let io = |e: std::io::Error| FileProblem::Io(e.to_string());
    let meta = std::fs::metadata(path).map_err(io)?;
    regular(meta.file_type())?;
    if let Some(written) = used {
        let is_mg = |p: &Path| p.extension().is_some_and(|e| e == "mg");
        if !is_mg(path) {
            let link_to = is_mg(written).then(|| path.display().to_string());
            return Err(FileProblem::NotMg { link_to });
        }
    }
    if meta.len() > MAX_FILE_BYTES as u64 {
        return Err(FileProblem::TooLarge { limit: MAX_FILE_BYTES });
    }
    let file = File::open(path).map_err(io)?;
    regular(file.metadata().map_err(io)?.file_type())?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(io)?;
    decode(bytes)
}

/// The bytes of a pipeline file as text, or the first reason they are not one.
pub(super) fn decode(bytes: Vec<u8>) -> Result<String, FileProblem> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(FileProblem::TooLarge { limit: MAX_FILE_BYTES });
    }
    let valid = match std::str::from_utf8(&bytes) {
        Ok(_) => bytes.len(),
        Err(e) => e.valid_up_to(),
    };
    if let Some(at) = bytes[..valid].iter().position(|b| *b == 0) {
        let (line, byte) = line_and_byte(&bytes, at);
        return Err(FileProblem::Nul { line, byte });
    }
    String::from_utf8(bytes).map_err(|e| {
        let (line, byte) = line_and_byte(e.as_bytes(), valid);
        FileProblem::NotUtf8 { line, byte }
    })
}

/// 1-based line and byte within the line of offset `at`; a line ends at `\n`, `\r\n` or a lone
/// `\r`, as the checker reads lines.
fn line_and_byte(bytes: &[u8], at: usize) -> (usize, usize) {
    let before = &bytes[..at.min(bytes.len())];
    let mut line = 1;
    let mut line_start = 0;
    for (i, b) in before.iter().enumerate() {
        let ends_line = *b == b'\n' || (*b == b'\r' && before.get(i + 1) != Some(&b'\n'));
        if ends_line {
            line += 1;
            line_start = i + 1;
        }
    }
    (line, at - line_start + 1)
}

/// Refuses anything but a regular file, saying what it is.
fn regular(ty: FileType) -> Result<(), FileProblem> {
    if ty.is_file() {
        return Ok(());
    }
    let what = if ty.is_dir() { "a directory" } else { special(ty) };
    Err(FileProblem::NotRegular { what })
}

#[cfg(unix)]
fn special(ty: FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ty.is_fifo() {
        "a FIFO"
    } else if ty.is_char_device() || ty.is_block_device() {
        "a device"
    } else if ty.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special(_: FileType) -> &'static str {
    "a special file"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_accepted_and_the_first_offending_byte_is_located() {
        assert_eq!(decode(b"pipeline p\n".to_vec()), Ok("pipeline p\n".to_string()));
        assert_eq!(decode(b"a\nbc\xffd".to_vec()), Err(FileProblem::NotUtf8 { line: 2, byte: 3 }));
        assert_eq!(decode(b"a\r\nb\rc\0\xff".to_vec()), Err(FileProblem::Nul { line: 3, byte: 2 }));
        assert_eq!(decode(b"\xff\0".to_vec()), Err(FileProblem::NotUtf8 { line: 1, byte: 1 }));
        // A character cut short at the end is located at its first byte.
        assert_eq!(decode("x\né".as_bytes()[..3].to_vec()), Err(FileProblem::NotUtf8 { line: 2, byte: 1 }));
        assert_eq!(decode(vec![b' '; MAX_FILE_BYTES + 1]), Err(FileProblem::TooLarge { limit: MAX_FILE_BYTES }));
    }
}
