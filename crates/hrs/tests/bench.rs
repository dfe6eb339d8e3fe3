//! `hrs bench` at a tiny size: every phase runs through the real roles and reports its
//! figures. Only their shape is checked here, never a time or a rate: a benchmark measures,
//! a test must not depend on how fast this machine is.

use std::process::Command;

use serde_json::Value;

/// The sum of a list of sizes.
fn total(sizes: &Value) -> u64 {
    sizes
        .as_array()
        .expect("a list of sizes")
        .iter()
        .filter_map(Value::as_u64)
        .sum()
}

#[test]
fn a_tiny_bench_reports_every_phase_against_both_limits_and_every_role() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("bench");
    let out = Command::new(env!("CARGO_BIN_EXE_hrs"))
        .args(["bench", "--mb", "8", "--sites", "2", "--crowd", "3"])
        .args(["--crowd-mb", "2", "--json", "--dir"])
        .arg(&dir)
        .output()
        .expect("hrs runs");
    assert!(
        out.status.success(),
        "the bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");

    let phases = report["phases"].as_array().expect("phases");
    let ids: Vec<&str> = phases.iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e"]);
    let bytes = |p: &Value| p["bytes"].as_u64().expect("bytes");
    // (a) to (d) carry the same bytes: the two runs the merged period is made of.
    let runs = total(&report["run_bytes"]);
    assert!(runs > 7_000_000 && runs <= 8_000_000, "{runs} bytes");
    for phase in &phases[..4] {
        assert_eq!(bytes(phase), runs, "{}", phase["id"]);
    }
    let crowd = total(&report["crowd_run_bytes"]);
    assert_eq!(bytes(&phases[4]), crowd);
    assert!(crowd > 0);
    for phase in phases {
        for figure in ["seconds", "mb_per_s", "ratio_to_a", "ratio_to_b"] {
            let value = phase[figure].as_f64().expect(figure);
            assert!(value.is_finite() && value > 0.0, "{} {figure}", phase["id"]);
        }
    }
    let targets: Vec<Option<&str>> = phases.iter().map(|p| p["target"]["of"].as_str()).collect();
    assert_eq!(targets, [None, None, Some("a"), Some("a"), Some("c")]);
    for phase in &phases[2..] {
        assert!(phase["target"]["met"].is_boolean());
        let ratio = phase["target"]["ratio"].as_f64().expect("ratio");
        assert!(ratio.is_finite() && ratio > 0.0);
    }
    assert_eq!(phases[2]["site_seconds"].as_array().map(Vec::len), Some(2));
    let period = phases[3]["period_bytes"].as_u64().expect("period size");
    assert!(period > 0 && period.abs_diff(runs) < runs / 100, "{period}");

    let roles: Vec<(&str, &str)> = report["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .map(|r| {
            let peak = r["peak_rss_mib"].as_f64().expect("peak");
            assert!(peak > 0.0, "{r}");
            assert!(r["met"].is_boolean());
            (
                r["role"].as_str().expect("role"),
                r["phase"].as_str().expect("phase"),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("agent", "c"),
            ("aggregator", "c"),
            ("aggregator", "d"),
            ("connection point", "d"),
            ("intake", "d"),
            ("agent", "e"),
            ("aggregator", "e"),
        ]
    );
    let processes: Vec<u64> = report["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .filter_map(|r| r["processes"].as_u64())
        .collect();
    assert_eq!(processes, [2, 1, 1, 1, 1, 3, 1]);

    let machine = &report["machine"];
    assert!(machine["cores"].as_u64().is_some_and(|n| n > 0));
    assert!(machine["memory_gib"].as_f64().is_some_and(|m| m > 0.0));
    assert!(machine["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(machine["cpu"].is_string());
}
