//! Printing command output: a reader that stops early (`hrs catalog list | head`) ends the
//! output, not the program with a panic.

use std::io::Write as _;

/// Writes `text` to stdout; a closed pipe is the reader's choice, not an error.
pub fn emit(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
