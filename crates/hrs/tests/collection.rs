//! A site database that is garbage, empty or partly missing, as an operator meets it on the
//! command line: `hrs collect` and `hrs agent --once` exit non-zero when every query failed
//! (the run is never spooled), a run with too many failed queries is held, `hrs status`
//! shows both, and `hrs release` lets a held run go.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn hrs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hrs"))
        .args(args)
        .output()
        .expect("hrs runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Bytes that are no SQLite database, as a garbled file holds: a SHA-256 chain, the same
/// at every run.
fn garbage(len: usize) -> Vec<u8> {
    use sha2::Digest as _;
    let mut block = sha2::Sha256::digest(b"garbage").to_vec();
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        bytes.extend_from_slice(&block);
        block = sha2::Sha256::digest(&block).to_vec();
    }
    bytes.truncate(len);
    bytes
}

/// Seeds a small site database for P01 at `path` with `hrs sitedb seed`.
fn seed(path: &Path) {
    let db = path.display().to_string();
    let output = hrs(&[
        "sitedb",
        "seed",
        "--db",
        &db,
        "--site",
        "P01",
        "--clients",
        "20",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
}

/// An upstream address nothing listens on: a loopback port the system chose, then closed.
fn closed_upstream() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// Writes an agent configuration for P01 in `dir` collecting `site_db`, with `extra` lines.
fn agent_config(dir: &Path, site_db: &Path, extra: &str) -> PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "site = \"P01\"\nhierarchy_id = \"3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47\"\n\
             site_db = \"sqlite:{}\"\nspool = \"spool.sqlite\"\nupstream = \"{}\"\n\
             period = \"2026-W48\"\n{extra}",
            site_db.display(),
            closed_upstream()
        ),
    )
    .expect("writes the configuration");
    path
}

#[test]
fn hrs_collect_prints_the_run_then_fails_when_every_query_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbled = dir.path().join("garbage.sqlite");
    std::fs::write(&garbled, garbage(64 << 10)).expect("writes");
    let empty = dir.path().join("empty.sqlite");
    std::fs::write(&empty, b"").expect("writes");
    for (db, names) in [
        (&garbled, "file is not a database"),
        (&empty, "no such table"),
    ] {
        let spec = format!("sqlite:{}", db.display());
        let output = hrs(&["collect", "--site-db", &spec, "--period", "2026-W48"]);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        assert!(
            stdout(&output).contains("queries failed)"),
            "{}",
            stdout(&output)
        );
        let error = stderr(&output);
        assert!(
            error.contains("every one of the") && error.contains(names),
            "{error}"
        );
    }
    let seeded = dir.path().join("site.sqlite");
    seed(&seeded);
    let spec = format!("sqlite:{}", seeded.display());
    let output = hrs(&["collect", "--site-db", &spec, "--period", "2026-W48"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("(0 queries failed)"));
}

#[test]
fn hrs_agent_once_fails_on_a_garbage_site_database_and_hrs_status_counts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbled = dir.path().join("garbage.sqlite");
    std::fs::write(&garbled, garbage(64 << 10)).expect("writes");
    let config = agent_config(dir.path(), &garbled, "");
    let config = config.display().to_string();

    let once = hrs(&["agent", "--config", &config, "--once"]);
    assert_eq!(once.status.code(), Some(1), "{}", stderr(&once));
    let error = stderr(&once);
    assert!(
        error.contains("site_db")
            && error.contains("file is not a database")
            && error.contains("nothing was spooled"),
        "{error}"
    );
    assert!(!stdout(&once).contains("delivered"), "{}", stdout(&once));

    let status = hrs(&["status", "--config", &config]);
    assert!(status.status.success(), "{}", stderr(&status));
    let shown = stdout(&status);
    assert!(
        shown.contains("FAILED        1 collection(s) spooled nothing; the last, of 2026-W48")
            && shown.contains("backlog       0 run(s)")
            && shown.contains("collected     nothing yet"),
        "{shown}"
    );

    let release = hrs(&["release", "--config", &config]);
    assert_eq!(release.status.code(), Some(1));
    assert!(
        stderr(&release).contains("no run is held"),
        "{}",
        stderr(&release)
    );
}

#[test]
fn a_held_run_is_shown_by_hrs_status_and_let_go_by_hrs_release() {
    let dir = tempfile::tempdir().expect("tempdir");
    let partial = dir.path().join("site.sqlite");
    seed(&partial);
    rusqlite::Connection::open(&partial)
        .expect("opens")
        .execute_batch("DROP TABLE v_Site")
        .expect("drops a view");
    let config = agent_config(dir.path(), &partial, "max_failed_share = 0\n");
    let config = config.display().to_string();

    let once = hrs(&[
        "agent",
        "--config",
        &config,
        "--once",
        "--deadline-seconds",
        "0",
    ]);
    assert_eq!(once.status.code(), Some(1), "{}", stderr(&once));
    let error = stderr(&once);
    let command = format!("hrs release --config {config} --run ");
    let run_id = error
        .lines()
        .find(|l| l.starts_with("error: run ") && l.contains("is held in the spool"))
        .and_then(|l| l.split(&command).nth(1))
        .map(|rest| rest.trim_end_matches('`').to_owned())
        .unwrap_or_else(|| panic!("no held run and release command in:\n{error}"));
    assert!(error.contains("queries failed"), "{error}");

    let status = stdout(&hrs(&["status", "--config", &config]));
    assert!(
        status.contains(&format!("HELD          run {run_id} of 2026-W48"))
            && status.contains("backlog       0 run(s)"),
        "{status}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&hrs(&[
        "status", "--config", &config, "--format", "json",
    ])))
    .expect("json");
    assert_eq!(json["held_runs"][0]["run_id"], run_id.as_str());

    let wrong = hrs(&["release", "--config", &config, "--run", "not-this-one"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("not-this-one is not held") && stderr(&wrong).contains(&run_id),
        "{}",
        stderr(&wrong)
    );
    let release = hrs(&["release", "--config", &config, "--run", &run_id]);
    assert!(release.status.success(), "{}", stderr(&release));
    assert!(
        stdout(&release).contains(&format!("released run {run_id} of 2026-W48")),
        "{}",
        stdout(&release)
    );
    let status = stdout(&hrs(&["status", "--config", &config]));
    assert!(
        !status.contains("HELD") && status.contains("backlog       1 run(s)"),
        "{status}"
    );
}
