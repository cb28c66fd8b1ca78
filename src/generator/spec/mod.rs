//! Reading `appliance.toml`: TOML text to the typed [`schema::Spec`].

pub mod schema;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::common::diag::{Diagnostic, SourceFile, SpecErrors};
pub use schema::Spec;

/// The largest spec we read: hundreds of times any real one, small enough
/// that a wrong `--spec` (a disk image, `/dev/zero`) fails at once instead
/// of filling memory.
pub const MAX_SPEC_BYTES: u64 = 1 << 20;

/// A spec that could not be read at all: no file, a directory, a device or
/// FIFO, or too large. `main` exits 2 on it, as on any bad spec.
#[derive(Debug)]
pub struct SpecUnreadable {
    pub path: String,
    /// What is wrong, on a line of its own (the OS error where there is one).
    pub problem: String,
    pub hint: String,
}

impl fmt::Display for SpecUnreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "error: failed to read spec `{}`\n  {}\nhint: {}",
            self.path, self.problem, self.hint
        )
    }
}

impl std::error::Error for SpecUnreadable {}

/// Reads the spec at `path`: only a regular file, at most
/// [`MAX_SPEC_BYTES`], and never waiting on a FIFO or device.
pub fn read(path: &Path) -> Result<SourceFile, anyhow::Error> {
    let name = path.display().to_string();
    let unreadable = |problem: String, hint: &str| SpecUnreadable {
        path: name.clone(),
        problem,
        hint: hint.to_string(),
    };
    let os_error = |e: std::io::Error| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => "run `appliance init` to write one, or pass `--spec PATH`",
            _ => "pass a spec you can read with `--spec PATH`",
        };
        unreadable(e.to_string(), hint)
    };
    // Refused before opening: opening a device or FIFO can block or act.
    let meta = std::fs::metadata(path).map_err(os_error)?;
    check_file_type(&meta.file_type(), path).map_err(|(problem, hint)| unreadable(problem, &hint))?;
    // Non-blocking, in case it was swapped for a FIFO since: the file
    // opened is checked again below.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(path)
        .map_err(os_error)?;
    let meta = file.metadata().map_err(os_error)?;
    check_file_type(&meta.file_type(), path).map_err(|(problem, hint)| unreadable(problem, &hint))?;
    let bytes = read_capped(file).map_err(os_error)?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(unreadable(
            format!("it is larger than {} MiB, far more than any spec", MAX_SPEC_BYTES >> 20),
            "pass the spec itself with `--spec PATH`",
        )
        .into());
    }
    Ok(decode(name, bytes)?)
}

/// At most one byte more than [`MAX_SPEC_BYTES`], so a larger file shows.
fn read_capped(file: File) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(MAX_SPEC_BYTES + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A spec is a regular file; anything else is named, with what to do.
fn check_file_type(kind: &std::fs::FileType, path: &Path) -> Result<(), (String, String)> {
    if kind.is_file() {
        return Ok(());
    }
    if kind.is_dir() {
        let problem = std::io::Error::from_raw_os_error(rustix::io::Errno::ISDIR.raw_os_error()).to_string();
        let hint = format!(
            "pass the spec file itself: `--spec {}`",
            path.join("appliance.toml").display()
        );
        return Err((problem, hint));
    }
    let what = if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err((
        format!("it is {what}, not a regular file"),
        "a spec is a TOML file: save it to a file and pass that with `--spec PATH`".to_string(),
    ))
}

/// The spec's bytes as text. TOML is UTF-8, so bytes that are not are a
/// spec error like any other, located at the first bad byte (its line and
/// column counted over the valid text before it).
pub fn decode(name: String, bytes: Vec<u8>) -> Result<SourceFile, SpecErrors> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(SourceFile { name, text }),
        Err(error) => {
            let offset = error.utf8_error().valid_up_to();
            let bytes = error.into_bytes();
            let bad = bytes[offset];
            // Valid up to `offset`, so nothing here is replaced.
            let valid = String::from_utf8_lossy(&bytes[..offset]).into_owned();
            let source = SourceFile { name, text: valid };
            let diagnostic = Diagnostic::new(
                offset..offset + 1,
                format!("the spec is not valid UTF-8: byte 0x{bad:02x} here does not begin a valid UTF-8 character"),
            )
            .hint("a spec is TOML text in UTF-8: save it as UTF-8 (or, if it is not a spec, pass the right one with `--spec PATH`)");
            Err(SpecErrors::new(&source, vec![diagnostic]))
        }
    }
}

/// Parses a spec, turning TOML and schema errors into located diagnostics.
pub fn parse(source: &SourceFile) -> Result<Spec, SpecErrors> {
    toml::from_str(&source.text).map_err(|error| {
        let span = error.span().unwrap_or(0..0);
        let message = error.message().trim().replace('\n', " ");
        let mut diagnostic = Diagnostic::new(span, message.clone());
        if message.starts_with("unknown field") {
            diagnostic = diagnostic.hint("remove the key or fix its spelling; every key is listed in docs/spec.md");
        } else if message.starts_with("missing field") {
            diagnostic = diagnostic.hint("add the key; docs/spec.md says what it means");
        } else if message.contains("unknown variant") {
            diagnostic = diagnostic.hint("use one of the values listed above");
        } else {
            diagnostic = diagnostic.hint("see docs/spec.md for the spec format");
        }
        SpecErrors::new(source, vec![diagnostic])
    })
}
