//! The fault suite: a hierarchy of six sites (the CAS and five primaries) collects four
//! periods, each role its own process, once calmly and once while links are cut and
//! delayed through fault-injecting proxies and the aggregator, the connection point, the
//! intake and agents are killed with SIGKILL and started again at random moments. The
//! merge store and the intake must end holding exactly what the calm run holds.
//!
//! The faults come from one seed, printed first; set `HRS_CHAOS_SEED` to replay a failure.
//! This file belongs to the `hrs` package (see its Cargo.toml) so it can run the binary.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const PERIODS: usize = 4;

fn demo(dir: &Path, chaos: Option<u64>) -> Value {
    let dir = dir.display().to_string();
    let mut args = vec![
        "demo".to_owned(),
        "--dir".into(),
        dir,
        "--json".into(),
        "--sites".into(),
        "5".into(),
        "--clients".into(),
        "60".into(),
        "--periods".into(),
        PERIODS.to_string(),
        "--period".into(),
        "2026-W48".into(),
    ];
    if let Some(seed) = chaos {
        args.extend(["--chaos".into(), seed.to_string()]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_hrs"))
        .args(&args)
        .output()
        .expect("hrs runs");
    assert!(
        out.status.success(),
        "demo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

fn seed() -> u64 {
    match std::env::var("HRS_CHAOS_SEED") {
        Ok(text) => text.parse().expect("HRS_CHAOS_SEED is a number"),
        // A fresh seed each run; it is printed, to replay a failure.
        Err(_) => u64::from(rand::random::<u32>()),
    }
}

/// What must not change under faults: per period, the merged digest and rows, and what
/// the intake holds.
fn outcome(summary: &Value) -> Vec<(String, u64, String, u64, String)> {
    summary["periods"]
        .as_array()
        .expect("periods")
        .iter()
        .map(|p| {
            (
                p["period"].as_str().expect("period").to_owned(),
                p["merged_rows"].as_u64().expect("rows"),
                p["digest"].as_str().expect("digest").to_owned(),
                p["intake_submissions"].as_u64().expect("submissions"),
                p["intake_digest"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn faults_change_nothing_that_is_stored() {
    let seed = seed();
    eprintln!("fault seed: {seed} (replay with HRS_CHAOS_SEED={seed})");
    let dir = tempfile::tempdir().expect("tempdir");
    let calm = demo(&dir.path().join("calm"), None);
    let chaos = demo(&dir.path().join("chaos"), Some(seed));

    let expected = outcome(&calm);
    assert_eq!(expected.len(), PERIODS);
    for (period, rows, _, submissions, intake_digest) in &expected {
        assert!(*rows > 0, "{period} merged no rows");
        assert_eq!(
            *submissions, 1,
            "{period} reached the intake {submissions} times"
        );
        assert!(
            !intake_digest.is_empty(),
            "{period} never reached the intake"
        );
    }
    let faults = &chaos["chaos"];
    eprintln!("faults: {faults}");
    assert_eq!(faults["seed"].as_u64(), Some(seed));
    assert_eq!(
        faults["kills"].as_array().map(Vec::len),
        Some(3 * PERIODS),
        "every planned kill happened"
    );
    assert!(faults["connections"].as_u64().unwrap_or(0) > 0);
    assert_eq!(
        outcome(&chaos),
        expected,
        "seed {seed}: under faults the stores differ from the calm run"
    );
    assert_eq!(chaos["digest"], calm["digest"], "seed {seed}");
    assert_eq!(chaos["merged_rows"], calm["merged_rows"], "seed {seed}");
}
