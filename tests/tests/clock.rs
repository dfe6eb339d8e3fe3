//! Only `hrs_core::clock` reads the system's date and time: every role is handed a clock,
//! so tests pin it and the suite passes on any date. `clippy.toml` refuses such reads too;
//! this test keeps the rule where CI runs only the tests.

use std::path::{Path, PathBuf};

/// Ways Rust code reads the wall clock, spelled so this file does not match itself.
const WALL_CLOCK_READS: [&str; 5] = [
    concat!("now_", "utc("),
    concat!("SystemTime::", "now("),
    concat!("UtcDateTime::", "now("),
    concat!("Utc::", "now("),
    concat!("Local::", "now("),
];

/// The one file allowed to read the wall clock.
const CLOCK_MODULE: &str = "crates/hrs-core/src/clock.rs";

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn nothing_outside_the_clock_module_reads_the_wall_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace");
    let mut files = Vec::new();
    for dir in ["crates", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.len() > 50,
        "found only {} source files under {}",
        files.len(),
        root.display()
    );
    let mut reads = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(root).unwrap_or(file);
        if relative == Path::new(CLOCK_MODULE) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("reads a source file");
        for (n, line) in text.lines().enumerate() {
            if WALL_CLOCK_READS.iter().any(|read| line.contains(read)) {
                reads.push(format!("{}:{}: {}", relative.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        reads.is_empty(),
        "read the time through hrs_core::clock::Clock instead:\n{}",
        reads.join("\n")
    );
}
