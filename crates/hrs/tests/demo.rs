//! The `hrs` binary as a newcomer runs it: the demo hierarchy, each role its own process on
//! loopback, then `hrs view` and the connection tool's export over what it left behind.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn hrs(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hrs"))
        .args(args)
        .output()
        .expect("hrs runs")
}

fn demo(dir: &Path, extra: &[&str]) -> Value {
    let dir = dir.display().to_string();
    let mut args = vec![
        "demo",
        "--dir",
        &dir,
        "--json",
        "--sites",
        "2",
        "--clients",
        "40",
        "--period",
        "2026-W48",
    ];
    args.extend_from_slice(extra);
    let out = hrs(&args);
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

/// Runs `hrs status --format json` on a role's configuration.
fn status_json(config: &Path) -> Value {
    let out = hrs(&[
        "status",
        "--config",
        &config.display().to_string(),
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status is JSON")
}

fn site_rows(summary: &Value) -> Vec<(String, u64)> {
    summary["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .map(|s| {
            (
                s["site"].as_str().expect("site").to_owned(),
                s["rows"].as_u64().expect("rows"),
            )
        })
        .collect()
}

#[test]
fn demo_online_and_offline_deterministic_and_viewable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let online = demo(&tmp.path().join("on"), &[]);
    let sites = site_rows(&online);
    let names: Vec<&str> = sites.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["CAS", "P01", "P02"]);
    assert!(sites.iter().all(|(_, rows)| *rows > 0));
    assert_eq!(
        online["merged_rows"].as_u64(),
        Some(sites.iter().map(|(_, r)| r).sum())
    );
    assert_eq!(online["delivered"], "intake");
    assert!(tmp.path().join("on/logs/aggregator.log").exists());

    // The intake lists the hierarchy with its one submission; the connection point shows
    // the period sent and its last update check.
    let intake_config = tmp.path().join("on/intake/intake.toml");
    let out = hrs(&[
        "intake",
        "list",
        "--config",
        &intake_config.display().to_string(),
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let listed: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(listed[0]["hierarchy"], online["hierarchy_hash"]);
    assert_eq!(listed[0]["submissions"], 1);
    let point_config = tmp.path().join("on/connection-point/connection-point.toml");
    let out = hrs(&[
        "status",
        "--config",
        &point_config.display().to_string(),
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let status: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["periods"][0]["state"], "sent");
    assert!(status["last_check_at"].is_string(), "{status}");

    // The same flags give the same data, whatever the run ids and timestamps.
    let again = demo(&tmp.path().join("again"), &[]);
    assert_eq!(online["digest"], again["digest"]);
    assert_eq!(online["hierarchy_id"], again["hierarchy_id"]);

    // Offline, the connection tool carries the period out and the intake's answer back.
    let offline = demo(&tmp.path().join("off"), &["--offline"]);
    assert_eq!(offline["delivered"], "bundle");
    assert!(Path::new(offline["bundle"].as_str().expect("bundle path")).exists());
    assert!(offline["submission_id"].is_string(), "{offline}");
    assert_eq!(offline["digest"], online["digest"]);
    assert_eq!(offline["periods"][0]["intake_submissions"], 1);
    // Each step wrote its log next to its output.
    for (folder, step) in [
        ("media", "prepare"),
        ("downloads", "connect"),
        ("downloads", "import"),
    ] {
        let logs: Vec<_> = std::fs::read_dir(tmp.path().join("off").join(folder))
            .expect("lists")
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(&format!("hrs-connection-tool-{step}-")) && name.ends_with(".log")
            })
            .collect();
        assert_eq!(logs.len(), 1, "{step} log in {folder}");
    }

    // hrs view --site P02 prints only P02's rows.
    let store = tmp.path().join("on/aggregator/merge.sqlite");
    let store = store.display().to_string();
    let out = hrs(&[
        "view", "--store", &store, "--site", "P02", "--format", "csv",
    ]);
    assert!(out.status.success());
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("csv row")).collect();
    let p02 = sites.iter().find(|(s, _)| s == "P02").expect("P02").1;
    let data_rows = rows
        .iter()
        .filter(|r| !r[2].starts_with("collector:"))
        .count();
    assert_eq!(data_rows as u64, p02);
    assert!(
        rows.iter().any(|r| &r[2] == "collector:run"),
        "view shows the collector"
    );
    assert!(rows.iter().all(|r| &r[1] == "P02"));

    // Each agent's view of its link: delivered, nothing waiting.
    let status = status_json(&tmp.path().join("on/sites/P01/agent.toml"));
    assert_eq!(status["state"], "active");
    assert_eq!(status["backlog_runs"], 0);
    assert!(status["last_success_at"].is_string(), "{status}");
    // And the aggregator's view of every site's link.
    let links = status_json(&tmp.path().join("on/aggregator/aggregator.toml"));
    let states: Vec<&str> = links
        .as_array()
        .expect("one entry per site")
        .iter()
        .map(|l| l["state"].as_str().expect("contacted"))
        .collect();
    assert_eq!(states, ["active", "active", "active"]);

    // The export is what left: site codes hashed at Enhanced.
    let config = tmp.path().join("on/connection-point/connection-point.toml");
    let csv_path = tmp.path().join("export.csv");
    let out = hrs(&[
        "connection-tool",
        "export",
        "--config",
        &config.display().to_string(),
        "--dest",
        &csv_path.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&csv_path).expect("export written");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let query_ids: Vec<String> = reader
        .records()
        .map(|r| r.expect("csv record")[2].to_owned())
        .collect();
    let count = |id: &str| query_ids.iter().filter(|q| *q == id).count();
    // The export holds every merged row, plus what else leaves: the hierarchy's settings
    // and each site's collector statistics.
    let data_rows = query_ids
        .iter()
        .filter(|q| {
            !matches!(
                q.as_str(),
                "hierarchy" | "collector:run" | "collector:query"
            )
        })
        .count();
    assert_eq!(
        data_rows as u64,
        online["merged_rows"].as_u64().expect("rows")
    );
    assert_eq!(count("hierarchy"), 1);
    assert_eq!(count("collector:run"), 3, "one per site");
    assert!(count("collector:query") > 3);
    assert!(
        text.contains(r#"""mode"":""online"""#),
        "the mode leaves as Basic data"
    );
    assert!(!text.contains(",P02,"));
}

#[test]
fn bad_config_names_the_file_and_field() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("aggregator.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nhierarchy_id = \"not-a-guid\"\nstore = \"m.sqlite\"\nsites = [\"P01\"]\n",
    )
    .expect("writes");
    let out = hrs(&["aggregator", "--config", &config.display().to_string()]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("aggregator.toml") && err.contains("hierarchy_id"),
        "{err}"
    );
}

#[test]
fn example_configs_in_deploy_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config");
    // Read, not loaded: they name a deployment's folders (/var/lib/hrs, /etc/hrs), which
    // this machine need not have.
    hrs_agent::AgentConfig::read(&root.join("agent.toml")).expect("agent.toml");
    hrs_aggregator::AggregatorConfig::read(&root.join("aggregator.toml")).expect("aggregator.toml");
    hrs_connection::ConnectionPointConfig::read(&root.join("connection-point.toml"))
        .expect("connection-point.toml");
    hrs_intake::IntakeConfig::read(&root.join("intake.toml")).expect("intake.toml");
}

#[test]
fn hash_matches_independent_vectors() {
    // Computed with Python: base64(sha256(uuid.bytes_le)) and base64(sha256(s.encode("utf-16-le"))).
    for (value, hash) in [
        (
            "6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "CtF2iT7GRD8Xr/NmLQeqZFD1BxxY+nnhHMJ4bLJpq7g=",
        ),
        ("P01", "47AG/CYcCTPQymhu9woxbYC62T9E1hTQhqtCltDFfEo="),
    ] {
        let out = hrs(&["hash", value]);
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hash);
    }
}

#[test]
fn keyed_hash_matches_independent_vectors() {
    // Computed with Python: base64(hmac.new(bytes(range(32)), value_bytes, sha256).digest()).
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("hierarchy.key");
    std::fs::write(&key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").expect("key");
    let key = key.display().to_string();
    for (value, hash) in [
        ("P01", "0vIo+QRy70/jkGUGLZJ/rtHTyACSrtAoC2M7Zpg5lvQ="),
        (
            "6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "Ehgr4zm472JlFPwwnNGexeDrX729iIH5Po6Vrp26/eI=",
        ),
    ] {
        let out = hrs(&["hash", "--key-file", &key, value]);
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hash);
    }
    // A new key is owner-only and never replaces an existing one.
    let fresh = dir.path().join("new.key").display().to_string();
    assert!(hrs(&["hash", "--new-key", &fresh]).status.success());
    assert!(!hrs(&["hash", "--new-key", &fresh]).status.success());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&fresh).expect("key").permissions().mode();
        assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
    }
}

#[test]
fn catalog_list_filters_by_level_and_show_names_the_hashed_columns() {
    let out = hrs(&["catalog", "list", "--level", "Basic", "--format", "json"]);
    assert!(out.status.success());
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json array");
    assert!(!listed.is_empty());
    assert!(
        listed
            .iter()
            .all(|q| q["level"] == "Basic" && q["category"].is_string())
    );
    let all: Vec<Value> =
        serde_json::from_slice(&hrs(&["catalog", "list", "--format", "json"]).stdout)
            .expect("json");
    assert!(all.len() > listed.len());

    let out = hrs(&["catalog", "show", "E-CONTENT"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("one-way hashed"));
    let out = hrs(&["catalog", "show", "NOPE"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOPE"));
}
