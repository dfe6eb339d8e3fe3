//! The connection tool as an operator meets it: every step writes a log next to its
//! output, and each mistake (wrong folder, another hierarchy's downloads, an intake that
//! cannot be reached, a connection point that never ran) is an error that says what to do.

use std::path::Path;
use std::process::{Command, Output};

fn hrs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hrs"))
        .args(args)
        .output()
        .expect("hrs runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A connection point's configuration in `dir`, for a point that never ran.
fn point_config(dir: &Path, intake: &str) -> String {
    let path = dir.join("connection-point.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nhierarchy_id = \"6f9619ff-8b86-d011-b42d-00c04fc964ff\"\n\
             mode = \"offline\"\nstore = \"cp.sqlite\"\nintake = \"{intake}\"\n"
        ),
    )
    .expect("writes");
    path.display().to_string()
}

fn logs_in(dir: &Path, step: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("hrs-connection-tool-{step}-"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn each_mistake_says_what_to_do_and_is_logged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = point_config(tmp.path(), "http://127.0.0.1:9");
    let (media, downloads) = (tmp.path().join("media"), tmp.path().join("downloads"));
    std::fs::create_dir_all(&media).expect("media");
    std::fs::create_dir_all(&downloads).expect("downloads");
    let (media_arg, downloads_arg) = (media.display().to_string(), downloads.display().to_string());

    // prepare before the connection point ever ran.
    let out = hrs(&[
        "connection-tool",
        "prepare",
        "--config",
        &config,
        "--dest",
        &media_arg,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cp.sqlite"), "{}", stderr(&out));
    assert_eq!(logs_in(&media, "prepare"), 1);

    // connect in a folder without bundles.
    let out = hrs(&[
        "connection-tool",
        "connect",
        "--source",
        &media_arg,
        "--updates-dest",
        &downloads_arg,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no HRS bundle"), "{}", stderr(&out));
    assert_eq!(logs_in(&downloads, "connect"), 1);

    // import from a folder `connect` never wrote into.
    let out = hrs(&[
        "connection-tool",
        "import",
        "--config",
        &config,
        "--source",
        &downloads_arg,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("run `hrs connection-tool connect"),
        "{}",
        stderr(&out)
    );

    // import from a folder holding another hierarchy's downloads only.
    let other = downloads.join("another-hierarchy");
    std::fs::create_dir_all(&other).expect("dir");
    std::fs::write(other.join("receipt.json"), "{}").expect("writes");
    let out = hrs(&[
        "connection-tool",
        "import",
        "--config",
        &config,
        "--source",
        &downloads_arg,
    ]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains("another-hierarchy") && text.contains("not for this connection point"),
        "{text}"
    );
    assert_eq!(logs_in(&downloads, "import"), 2);

    // A source that is not a folder.
    let out = hrs(&[
        "connection-tool",
        "connect",
        "--source",
        "/nonexistent/media",
        "--updates-dest",
        &downloads_arg,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a folder"), "{}", stderr(&out));
}

#[test]
fn status_of_a_connection_point_that_never_ran_says_so() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = point_config(tmp.path(), "http://127.0.0.1:9");
    let out = hrs(&["status", "--config", &config]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("run the connection point first"),
        "{}",
        stderr(&out)
    );
}
