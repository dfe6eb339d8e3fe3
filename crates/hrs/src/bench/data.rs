//! The bench's bytes: one run per site, holding result sets of every Full query of the
//! built-in catalog, their rows drawn from a seed and shaped by the catalog as a
//! collection shapes them (hierarchy prepended, identifying columns hashed, dropped ones
//! left out), written into the site's spool by the agent's own encoder, then copied once to
//! a file. Every phase carries these bytes: the spool's for the agents, the file's for the
//! baselines.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use hrs_agent::collect::Sink as _;
use hrs_agent::spool::Spool;
use hrs_core::bytes::{RunBytes as _, chunk_len};
use hrs_core::catalog::{Catalog, ColumnDef, ColumnType, Privacy, QueryDef, Scope};
use hrs_core::clock::rfc3339;
use hrs_core::hash::Hasher;
use hrs_core::{HierarchyId, Level, Period, SiteCode, Value};
use hrs_proto::v1 as pb;
use prost::Message as _;
use prost::encoding::encoded_len_varint;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest as _, Sha256};

/// Size of the pieces a run is copied to its file in.
const COPY_BYTES: usize = 4 << 20;

/// What every run of one bench shares.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    /// The hierarchy every run belongs to.
    pub hierarchy: HierarchyId,
    /// The period every run covers.
    pub period: Period,
    /// Seed of the rows; each site draws its own from it.
    pub seed: u64,
}

/// One site's run, in its spool and in its file.
#[derive(Debug, Clone)]
pub(crate) struct SiteRun {
    /// The site.
    pub site: SiteCode,
    /// The run's id, by which the aggregator's store names it once committed.
    pub run_id: String,
    /// The folder of the site: its spool, and the agent's configuration beside it.
    pub folder: PathBuf,
    /// The run's encoding, copied from the spool.
    pub file: PathBuf,
    /// Length of the encoding.
    pub bytes: u64,
}

/// Writes the run of `site`, of about `target` bytes, into a spool in `folder` and copies it
/// to `file`.
pub(crate) async fn site_run(
    batch: &Batch,
    site: &SiteCode,
    target: u64,
    folder: &Path,
    file: &Path,
) -> anyhow::Result<SiteRun> {
    let catalog = Catalog::builtin()?;
    let spool = Spool::open(&folder.join("spool.sqlite"))?;
    let run_id = run_id(batch.seed, site);
    let header = header(batch, site, &run_id, &catalog);
    let queries: Vec<&QueryDef> = catalog
        .at_level(Level::Full)
        .filter(|q| matches!(q.scope, Scope::Both | Scope::Primary))
        .collect();
    let sets: Vec<pb::ResultSet> = queries.iter().map(|q| empty_set(q)).collect();
    // What the run holds besides rows, so rows fill the rest: its own fields and digest,
    // and each set's fields, key and length (a varint, at most ten bytes).
    let frame = header.encoded_len() as u64
        + 128
        + sets
            .iter()
            .map(|s| 11 + s.encoded_len() as u64)
            .sum::<u64>();
    let rows_budget = target.saturating_sub(frame);
    let hierarchy_hash = batch.hierarchy.hashed();
    let hasher = Hasher::Plain;
    let mut rng = ChaCha8Rng::seed_from_u64(batch.seed ^ site_seed(site));
    let mut sink = spool.begin(&run_id).await?;
    let mut made = 0u64;
    for (n, (query, set)) in queries.iter().zip(sets).enumerate() {
        // Each set fills up to its share of the budget so far: the run ends within one row
        // of its target, whatever the rows' widths.
        let goal = rows_budget * (n as u64 + 1) / queries.len() as u64;
        loop {
            let raw = query.columns.iter().map(|c| value(c, &mut rng)).collect();
            let values = query.shape_row(raw, &hierarchy_hash, &hasher)?;
            let row = pb::Row {
                values: values.iter().map(pb::Value::from).collect(),
            };
            // As the spool writes a row: its key, its length, the row.
            let len = row.encoded_len();
            let len = (1 + encoded_len_varint(len as u64) + len) as u64;
            if made + len > goal {
                break;
            }
            made += len;
            sink.row(&row)?;
            if sink.full() {
                sink.flush().await?;
            }
        }
        sink.end_set(&set).await?;
    }
    sink.finish(&header, header.finished_at.clone(), None)
        .await?;
    let bytes = copy_out(&spool, &run_id, file).await?;
    Ok(SiteRun {
        site: site.clone(),
        run_id,
        folder: folder.to_owned(),
        file: file.to_owned(),
        bytes,
    })
}

/// The result set of `query` as the run records it: the query's declared
/// columns, no rows, no error.
fn empty_set(query: &QueryDef) -> pb::ResultSet {
    pb::ResultSet {
        query_id: query.id.clone(),
        level: query.level.as_str().to_owned(),
        columns: query.wire_columns(),
        rows: Vec::new(),
        error: String::new(),
        duration_ms: 40,
    }
}

/// The run's own fields: collected on the Monday the period closed, a site a minute.
fn header(batch: &Batch, site: &SiteCode, run_id: &str, catalog: &Catalog) -> pb::Run {
    let started = batch.period.closes_at() + time::Duration::hours(1);
    let finished =
        started + time::Duration::minutes(i64::try_from(site_seed(site) % 50).unwrap_or(0) + 1);
    pb::Run {
        run_id: run_id.to_owned(),
        sequence: 1,
        site: site.to_string(),
        hierarchy_id: batch.hierarchy.to_string(),
        period: batch.period.to_string(),
        catalog_version: catalog.version.clone(),
        level: Level::Full.as_str().to_owned(),
        started_at: rfc3339(started),
        finished_at: rfc3339(finished),
        ..Default::default()
    }
}

/// A site's run id, the same for the same seed.
fn run_id(seed: u64, site: &SiteCode) -> String {
    let digest = Sha256::digest(format!("hrs-bench-run:{seed}:{site}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// A number of the site's own, so sites draw different rows from one seed.
fn site_seed(site: &SiteCode) -> u64 {
    site.as_str()
        .bytes()
        .fold(0u64, |n, b| n.wrapping_mul(131).wrapping_add(u64::from(b)))
}

/// Text of the kinds a site database's views hold, picked by what the column is named.
const WORDS: [&str; 12] = [
    "Microsoft Windows 11 Enterprise",
    "Microsoft Windows Server 2022 Standard",
    "Configuration Manager Client",
    "Microsoft SQL Server 2019",
    "Default Client Settings",
    "Software Update Point",
    "Succeeded",
    "Failed",
    "In Progress",
    "x64-based PC",
    "en-US",
    "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz",
];

/// A raw cell of `column`, as the site database would return it: NULL now and then.
fn value(column: &ColumnDef, rng: &mut ChaCha8Rng) -> Value {
    if rng.random_ratio(1, 20) {
        return Value::Null;
    }
    let n: u32 = rng.random();
    match column.ty {
        ColumnType::Int => Value::Int(i64::from(n % 10u32.pow(1 + n % 7))),
        ColumnType::Real => Value::Real(f64::from(n % 1_000_000) / 100.0),
        ColumnType::Bool => Value::Bool(n.is_multiple_of(2)),
        ColumnType::Text => Value::Text(text(column, n)),
    }
}

fn text(column: &ColumnDef, n: u32) -> String {
    let name = column.name.to_ascii_lowercase();
    if matches!(column.privacy, Privacy::Hash | Privacy::Identifying) {
        return format!("CM{:05}.corp.contoso.example", n % 50_000);
    }
    if name.contains("date") || name.contains("time") || name.ends_with("_at") {
        return format!(
            "2026-11-{:02} {:02}:{:02}:00",
            1 + n % 28,
            n % 24,
            (n / 24) % 60
        );
    }
    if name.contains("version") || name.contains("build") {
        return format!("5.00.{}.{}", 9000 + n % 200, 1000 + (n / 200) % 100);
    }
    WORDS[n as usize % WORDS.len()].to_owned()
}

/// Copies a spooled run's encoding to `file`, a piece at a time; returns its length.
async fn copy_out(spool: &Spool, run_id: &str, file: &Path) -> anyhow::Result<u64> {
    let source = Arc::new(spool.bytes(run_id).await?);
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let size = source.size();
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&file)
                .with_context(|| format!("cannot create {}", file.display()))?,
        );
        let mut offset = 0;
        while offset < size {
            let len = chunk_len(size, offset, COPY_BYTES);
            out.write_all(&source.read_at(offset, len)?)?;
            offset += len as u64;
        }
        out.into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()
            .with_context(|| format!("cannot write {}", file.display()))?;
        Ok(size)
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_run_comes_out_near_its_target_the_same_for_the_same_seed_and_valid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let batch = Batch {
            hierarchy: "3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47".parse().expect("id"),
            period: "2026-W48".parse().expect("period"),
            seed: 7,
        };
        let site: SiteCode = "P01".parse().expect("site");
        let mut files = Vec::new();
        for copy in ["one", "two"] {
            let folder = dir.path().join(copy);
            std::fs::create_dir_all(&folder).expect("folder");
            let run = site_run(&batch, &site, 300_000, &folder, &folder.join("run"))
                .await
                .expect("writes the run");
            assert!(
                (299_000..=300_000).contains(&run.bytes),
                "{} bytes",
                run.bytes
            );
            files.push(std::fs::read(&run.file).expect("reads the file"));
        }
        assert_eq!(files[0], files[1]);
        hrs_core::encoded::check_run_encoded(&files[0]).expect("the aggregator's check passes");
        let run = pb::Run::decode(files[0].as_slice()).expect("decodes");
        assert!(run.results.iter().filter(|s| !s.rows.is_empty()).count() > 10);
    }
}
