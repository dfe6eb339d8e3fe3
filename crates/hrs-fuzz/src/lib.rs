//! Fuzz targets and property tests for every HRS decoder and validator, on stable Rust.
//!
//! Everything a role reads from outside is here: encoded runs (the one run check,
//! `check_run_encoded`, on the bytes as they arrive and on prost's canonical encoding of
//! what prost decodes from them), merged periods (`check_merged`), the gRPC requests of
//! every service (each answered by a real service in this process: runs pushed to the
//! aggregator in chunks over loopback, merged periods sent in chunks to the connection
//! point and the intake, whose check of a period's encoding decides what they store),
//! the connection tool's tar bundles, the four roles'
//! configuration files, site database connection strings, and identifiers.
//!
//! # Targets
//!
//! Each target in [`targets`] is a plain `fn(&[u8])` that panics when an invariant breaks,
//! listed with its seeds in [`TARGETS`]. `cargo test -p hrs-fuzz` runs each one briefly
//! (`tests/fuzz.rs`, one test per target, named after it): its valid seeds as they are,
//! then a few hundred random inputs and mutations of the seeds (byte edits, protobuf field
//! edits that keep the framing, line and token edits of text, digests fixed up so a
//! mutated run gets past the digest check). The seeds are made at test time by the real
//! machinery ([`seeds`]): runs collected from seeded SQLite site databases, merged, sent
//! out, written as bundles. Property tests with generated values are in
//! `tests/properties.rs`; what they found is kept there as `#[ignore]`d tests, each with
//! its reproducer.
//!
//! # Longer campaigns
//!
//! The driver reads its budget from the environment:
//!
//! - `HRS_FUZZ_CASES`: cases per target instead of the short run's few hundred.
//! - `HRS_FUZZ_SECONDS`: keeps each target running for this long, batch after batch.
//! - `HRS_FUZZ_SEED`: the random seed (a number), to repeat a run; a failure prints it.
//! - `HRS_FUZZ_REPLAY`: a file or folder of inputs to run instead (from a folder, files
//!   named `<target>-*` go to that target only); name the target's test with it.
//!
//! For example, ten minutes for each of the run targets, two at a time (`--release` runs
//! many more cases in the same time, after a longer build):
//!
//! ```text
//! HRS_FUZZ_SECONDS=600 cargo test -p hrs-fuzz --test fuzz -- run_ --test-threads 2
//! ```
//!
//! `PROPTEST_CASES` raises the case count of every property test the same way. A failing
//! case is shrunk to a small input, printed in hex and written to
//! `$TMPDIR/hrs-fuzz/<target>-<hash>.bin`, which `HRS_FUZZ_REPLAY` runs again. For
//! coverage-guided fuzzing, a libFuzzer or AFL harness can call a target directly, e.g.
//! with cargo-fuzz on a nightly toolchain:
//! `fuzz_target!(|data: &[u8]| hrs_fuzz::targets::run_encoded(data));`.
//!
//! # Known differences, not bugs
//!
//! The run check refuses by design some encodings that prost decodes into a run whose
//! canonical encoding it accepts: wire groups (wire types 3 and 4) among a run's or a
//! result set's own fields, and encodings beyond its size limits (a row over 4 MiB, a
//! run's own fields or one set's fields over 1 MiB). [`wire::streaming_gap`] recognises
//! them; the agreement between the check of the bytes and of their canonical encoding is
//! asserted only outside them, and the generated runs of the property tests contain
//! neither.

pub mod mutate;
pub mod seeds;
pub mod targets;
pub mod wire;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};

use crate::mutate::Edit;
use crate::wire::Schema;

/// What a target reads, which decides how its seeds are mutated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A protobuf message of this schema: field edits descend into it.
    Protobuf(Schema),
    /// Text (TOML, JSON, a connection string): line and token edits.
    Text,
    /// Binary framing that any change of length breaks (a tar file): byte edits only.
    Bytes,
}

/// One fuzz target: a decoder with its invariants, and the inputs it starts from.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its name: the test's name in `tests/fuzz.rs`.
    pub name: &'static str,
    /// Feeds one input to the decoder; panics when an invariant breaks.
    pub run: fn(&[u8]),
    /// Returns its valid seeds.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// How its inputs are read and mutated.
    pub form: Form,
    /// Cases of the short run under `cargo test`, sized to about a second in debug.
    pub cases: u32,
}

fn runs() -> Vec<Vec<u8>> {
    use prost::Message as _;
    seeds::corpus()
        .runs
        .iter()
        .map(|r| r.encode_to_vec())
        .collect()
}

fn periods() -> Vec<Vec<u8>> {
    use prost::Message as _;
    seeds::corpus()
        .periods
        .iter()
        .map(|p| p.encode_to_vec())
        .collect()
}

fn texts(texts: &[String]) -> Vec<Vec<u8>> {
    texts.iter().map(|t| t.clone().into_bytes()).collect()
}

/// A request of each kind in the envelope that picks the call (see
/// [`targets::aggregator_service`]).
fn aggregator_calls() -> Vec<Vec<u8>> {
    let r = seeds::requests();
    let mut calls = Vec::new();
    for (call, requests) in [(1u32, &r.run_chunk), (2, &r.resume_run), (3, &r.heartbeat)] {
        for request in requests {
            calls.push(wire::encode(&[wire::Field {
                number: call,
                payload: wire::Payload::Bytes(request.clone()),
            }]));
        }
    }
    calls
}

/// A call of each kind for every period of the corpus after the first `skip`, in the
/// envelope that picks the call (see [`targets::connection_point_service`]): the period
/// sent, its resume, and its raw chunk stream.
fn period_calls(skip: usize) -> Vec<Vec<u8>> {
    let r = seeds::requests();
    let bytes = |number: u32, message: &Vec<u8>| wire::Field {
        number,
        payload: wire::Payload::Bytes(message.clone()),
    };
    let mut calls = Vec::new();
    for i in skip..r.period_chunk.len() {
        calls.push(wire::encode(&[bytes(1, &r.period_chunk[i])]));
        calls.push(wire::encode(&[bytes(2, &r.resume_period[i])]));
        let stream: Vec<wire::Field> = r.period_stream[i].iter().map(|c| bytes(3, c)).collect();
        calls.push(wire::encode(&stream));
    }
    calls
}

/// Every fuzz target, with its seeds.
pub const TARGETS: &[Target] = &[
    Target {
        name: "run_encoded",
        run: targets::run_encoded,
        seeds: runs,
        form: Form::Protobuf(Schema::Run),
        cases: 400,
    },
    Target {
        name: "run_decoded",
        run: targets::run_decoded,
        seeds: runs,
        form: Form::Protobuf(Schema::Run),
        cases: 200,
    },
    Target {
        name: "merged_period",
        run: targets::merged_period,
        seeds: periods,
        form: Form::Protobuf(Schema::MergedPeriod),
        cases: 150,
    },
    Target {
        name: "offline_bundle",
        run: targets::offline_bundle,
        seeds: || seeds::corpus().offline_bundles.clone(),
        form: Form::Bytes,
        cases: 200,
    },
    Target {
        name: "run_chunk",
        run: targets::run_chunk,
        seeds: || seeds::requests().run_chunk.clone(),
        form: Form::Protobuf(Schema::RunChunk),
        cases: 200,
    },
    Target {
        name: "aggregator_service",
        run: targets::aggregator_service,
        seeds: aggregator_calls,
        form: Form::Protobuf(Schema::AggregatorCall),
        cases: 200,
    },
    Target {
        name: "connection_point_service",
        run: targets::connection_point_service,
        seeds: || period_calls(0),
        form: Form::Protobuf(Schema::PeriodCall),
        cases: 150,
    },
    Target {
        name: "intake_service",
        run: targets::intake_service,
        // The intake is sent periods as they leave the hierarchy: the corpus's last two.
        seeds: || period_calls(2),
        form: Form::Protobuf(Schema::PeriodCall),
        cases: 150,
    },
    Target {
        name: "agent_config",
        run: targets::agent_config,
        seeds: || texts(&seeds::corpus().agent_configs),
        form: Form::Text,
        cases: 300,
    },
    Target {
        name: "aggregator_config",
        run: targets::aggregator_config,
        seeds: || texts(&seeds::corpus().aggregator_configs),
        form: Form::Text,
        cases: 300,
    },
    Target {
        name: "connection_point_config",
        run: targets::connection_point_config,
        seeds: || texts(&seeds::corpus().connection_point_configs),
        form: Form::Text,
        cases: 300,
    },
    Target {
        name: "intake_config",
        run: targets::intake_config,
        seeds: || texts(&seeds::corpus().intake_configs),
        form: Form::Text,
        cases: 300,
    },
    Target {
        name: "connection_string",
        run: targets::connection_string,
        seeds: || texts(&seeds::corpus().connection_strings),
        form: Form::Text,
        cases: 600,
    },
    Target {
        name: "ids",
        run: targets::ids,
        seeds: || texts(&seeds::corpus().ids),
        form: Form::Text,
        cases: 600,
    },
];

/// Returns the target of that name.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Bytes and strings that often matter to a decoder: boundaries, ids of the seed
/// hierarchy, spellings the validators must refuse, text that is not UTF-8.
fn interesting_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "", "P01", "p01", "CAS", "P0", "P001", "2026-W48", "2026-W53", "2025-W53", "2026-W00",
            "2026-W+1", "+026-W48", "Basic", "basic", "Enhanced", "Full", "Extended", "text",
            "int", "real", "bool", "null", seeds::HIERARCHY_ID,
            "00000000-0000-0000-0000-000000000000", "online", "offline", "2026.12.1",
            "0000000000000000000000000000000000000000000000000000000000000000",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => Just(vec![0xff, 0xfe, 0x00]),
        1 => Just(vec![b'a'; 300]),
        2 => prop::collection::vec(any::<u8>(), 0..24),
    ]
}

/// Numbers at the edges of every integer type a message holds, and zigzag encodings of
/// signed ones.
fn interesting_number() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0,
            1,
            2,
            127,
            128,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX,
            u64::MAX - 1,
            0x7ff8_0000_0000_0000, // a NaN, as a double's bits
            0x7ff0_0000_0000_0000, // +infinity
            0x8000_0000_0000_0000, // -0.0
        ]),
        1 => any::<u64>(),
    ]
}

/// Tokens that change the meaning or the syntax of a TOML or JSON file.
fn interesting_token() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "\"",
        "'",
        "=",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "\n",
        "#",
        "\\",
        "0",
        "-1",
        "1",
        "4294967296",
        "18446744073709551616",
        "1e309",
        "nan",
        "inf",
        "true",
        "null",
        "\"\"",
        "\"P01\"",
        "\"2026-W48\"",
        "\"Full\"",
        "\"http://127.0.0.1:1\"",
        "\"https://x\"",
        "\"x\"",
        "\"sqlite:\"",
        "\"\\u0000\"",
        "\"\\uD800\"",
        "é",
        "💥",
        "[[x]]",
        "[x]",
        "{}",
        "[]",
        "\"server=h;password=Fuzz-Secret-1\"",
        "hrs-bundle/4",
        "payload",
        "digest",
    ])
    .prop_map(str::to_owned);
    prop_oneof![
        4 => fixed,
        2 => prop::sample::select(TOKEN_KEYS.to_vec()).prop_map(str::to_owned),
        2 => "[A-Za-z0-9_]{1,8}",
        1 => "[ -~]{0,12}",
    ]
}

/// Keys of every role's configuration and of bundles, so a token edit can repeat a key,
/// move a value to another key, or name one that does not exist.
const TOKEN_KEYS: &[&str] = &[
    "site",
    "site_type",
    "hierarchy_id",
    "level",
    "site_db",
    "spool",
    "upstream",
    "period",
    "listen",
    "store",
    "sites",
    "connection_point",
    "mode",
    "intake",
    "outbox",
    "retention_days",
    "tls",
    "cert",
    "key",
    "ca",
    "limits",
    "metrics",
    "hash_key_file",
    "max_run_mb",
    "push_chunk_kib",
    "link_degraded_after",
    "link_failed_after",
    "format",
    "payload_sha256",
    "rows",
    "columns",
    "query_id",
    "missing_sites",
    "unknown_key",
];

fn byte_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<u32>(), any::<u8>()).prop_map(|(at, bit)| Edit::FlipBit { at, bit }),
        (
            any::<u32>(),
            prop_oneof![Just(0u8), Just(0x7f), Just(0x80), Just(0xff), any::<u8>()]
        )
            .prop_map(|(at, value)| Edit::SetByte { at, value }),
        (any::<u32>(), interesting_bytes()).prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (any::<u32>(), 1u16..64).prop_map(|(at, len)| Edit::Remove { at, len }),
        (any::<u32>(), 1u16..256).prop_map(|(at, len)| Edit::Repeat { at, len }),
        any::<u32>().prop_map(|at| Edit::Truncate { at }),
        (any::<u32>(), any::<u32>(), 1u16..512, any::<u32>()).prop_map(|(seed, from, len, at)| {
            Edit::Splice {
                seed,
                from,
                len,
                at,
            }
        }),
    ]
}

/// Field numbers a field is moved to: mostly ones HRS messages define, sometimes the
/// invalid 0, the largest valid one, or any.
fn field_number() -> impl Strategy<Value = u32> {
    prop_oneof![6 => 1u32..13, 1 => Just(0), 1 => Just((1 << 29) - 1), 1 => any::<u32>()]
}

fn field_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => any::<u32>().prop_map(|field| Edit::DropField { field }),
        3 => any::<u32>().prop_map(|field| Edit::RepeatField { field }),
        2 => any::<u32>().prop_map(|field| Edit::SwapFields { field }),
        3 => (any::<u32>(), field_number())
            .prop_map(|(field, number)| Edit::Renumber { field, number }),
        1 => (any::<u32>(), 0u8..6).prop_map(|(field, wire)| Edit::Rewire { field, wire }),
        4 => (any::<u32>(), interesting_number())
            .prop_map(|(field, value)| Edit::SetNumber { field, value }),
        4 => (any::<u32>(), interesting_bytes())
            .prop_map(|(field, bytes)| Edit::SetBytes { field, bytes }),
    ]
}

fn text_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<u32>(), interesting_token())
            .prop_map(|(token, with)| Edit::ReplaceToken { token, with }),
        1 => any::<u32>().prop_map(|line| Edit::DropLine { line }),
        1 => any::<u32>().prop_map(|line| Edit::RepeatLine { line }),
        1 => any::<u32>().prop_map(|line| Edit::ToggleComment { line }),
    ]
}

/// Returns the edits that suit a form: mostly structural, some raw bytes.
pub fn edit(form: Form) -> BoxedStrategy<Edit> {
    match form {
        Form::Protobuf(_) => prop_oneof![6 => field_edit(), 1 => byte_edit()].boxed(),
        Form::Text => prop_oneof![3 => text_edit(), 1 => byte_edit()].boxed(),
        Form::Bytes => byte_edit().boxed(),
    }
}

/// Returns the inputs of a target: random bytes now and then, mostly its seeds with a
/// few edits, digests fixed up half of the time for protobuf inputs.
pub fn inputs(target: &Target) -> BoxedStrategy<Vec<u8>> {
    let seeds = (target.seeds)();
    let form = target.form;
    let schema = match form {
        Form::Protobuf(schema) => Some(schema),
        Form::Text | Form::Bytes => None,
    };
    let count = seeds.len().max(1);
    let mutated = (
        0..count,
        prop::collection::vec(edit(form), 1..5),
        any::<bool>(),
    )
        .prop_map(move |(i, edits, fix)| {
            let seed = seeds.get(i).map(Vec::as_slice).unwrap_or_default();
            let mutated = mutate::apply(seed, &edits, schema, &seeds);
            match schema {
                Some(schema) if fix => mutate::fix_digests(&mutated, schema),
                _ => mutated,
            }
        });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512),
        8 => mutated,
    ]
    .boxed()
}

/// Reads a number from the environment.
fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Returns the input as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a failing input where the failure message says, so it can be replayed.
fn keep_failure(target: &Target, input: &[u8]) -> Option<PathBuf> {
    let dir = std::env::temp_dir().join("hrs-fuzz");
    std::fs::create_dir_all(&dir).ok()?;
    let short: String = seeds::sha256_hex(input).chars().take(12).collect();
    let path = dir.join(format!("{}-{short}.bin", target.name));
    std::fs::write(&path, input).ok()?;
    Some(path)
}

/// Runs a target on every input in `path` (a file, or the files of a folder whose names
/// start with the target's name); a panic names the file.
pub fn replay(target: &Target, path: &Path) {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{}-", target.name)))
        });
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    for file in files {
        let input =
            std::fs::read(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        eprintln!("{}: replaying {}", target.name, file.display());
        (target.run)(&input);
    }
}

/// Runs a target: each seed as it is, then its budget of generated inputs (see the crate
/// docs for the environment that sets it). A failure is shrunk to a small input and
/// reported with its hex and the seed that repeats the run.
///
/// # Panics
///
/// When the target fails on an input: that is what a fuzz test reports.
pub fn fuzz(target: &Target) {
    if let Ok(path) = std::env::var("HRS_FUZZ_REPLAY") {
        replay(target, Path::new(&path));
        return;
    }
    for seed in (target.seeds)() {
        (target.run)(&seed);
    }
    let cases = env_number("HRS_FUZZ_CASES")
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(target.cases);
    let budget = env_number("HRS_FUZZ_SECONDS").map(Duration::from_secs);
    // A fresh seed each run unless one is given; it is printed on failure to replay.
    let mut seed =
        env_number("HRS_FUZZ_SEED").unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let strategy = inputs(target);
    let started = Instant::now();
    loop {
        let config = Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 4096,
            ..Config::default()
        };
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &{
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&seed.to_le_bytes());
            bytes
        });
        let mut runner = TestRunner::new_with_rng(config, rng);
        let outcome = runner.run(&strategy, |input| {
            (target.run)(&input);
            Ok(())
        });
        match outcome {
            Ok(()) => {}
            Err(TestError::Fail(reason, input)) => {
                let kept = keep_failure(target, &input)
                    .map(|p| format!("\nwritten to {}", p.display()))
                    .unwrap_or_default();
                panic!(
                    "fuzz target {} failed: {reason}\nminimal input ({} bytes): {}{kept}\n\
                     repeat with HRS_FUZZ_SEED={seed}",
                    target.name,
                    input.len(),
                    hex(&input),
                );
            }
            Err(TestError::Abort(reason)) => {
                panic!("fuzz target {} aborted: {reason}", target.name)
            }
        }
        match budget {
            Some(budget) if started.elapsed() < budget => seed = seed.wrapping_add(1),
            _ => break,
        }
    }
}
