//! Writing files that hold secrets.

use std::io::Write as _;
use std::path::Path;

/// Writes a secret (a key) to a new file readable by its owner only, from its first byte;
/// refuses to replace an existing file.
pub fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}
