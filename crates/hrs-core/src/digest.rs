//! Content digests: what makes delivery idempotent and lets two runs be compared.
//!
//! A digest is a hex SHA-256 over a canonical, length-prefixed encoding of the content. It
//! leaves out what differs between two deliveries of the same data (run ids, sequence
//! numbers, timestamps, durations), so equal data gives equal digests on every machine.

use hrs_proto::v1 as pb;
use sha2::{Digest as _, Sha256};

/// Feeds fields into SHA-256 with type tags and length prefixes, so no two different
/// contents encode to the same bytes.
struct Canonical(Sha256);

impl Canonical {
    fn new(domain: &str) -> Self {
        let mut this = Self(Sha256::new());
        this.str(domain);
        this
    }

    fn str(&mut self, s: &str) {
        self.0.update(b"s");
        self.0.update((s.len() as u64).to_be_bytes());
        self.0.update(s.as_bytes());
    }

    fn u64(&mut self, n: u64) {
        self.0.update(b"u");
        self.0.update(n.to_be_bytes());
    }

    fn value(&mut self, value: &pb::Value) {
        use pb::value::Kind;
        match &value.kind {
            None | Some(Kind::Null(_)) => self.0.update(b"N"),
            Some(Kind::Text(s)) => {
                self.0.update(b"T");
                self.str(s);
            }
            Some(Kind::Int(i)) => {
                self.0.update(b"I");
                self.0.update(i.to_be_bytes());
            }
            Some(Kind::Real(r)) => {
                self.0.update(b"R");
                self.0.update(r.to_bits().to_be_bytes());
            }
            Some(Kind::Bool(b)) => self.0.update(if *b { b"B1" } else { b"B0" }),
        }
    }

    fn results(&mut self, results: &[pb::ResultSet]) {
        let mut sorted: Vec<&pb::ResultSet> = results.iter().collect();
        sorted.sort_by(|a, b| a.query_id.cmp(&b.query_id));
        self.u64(sorted.len() as u64);
        for set in sorted {
            self.set(set, set.rows.len() as u64);
            for row in &set.rows {
                self.row(row);
            }
        }
    }

    /// A result set's fields, then how many rows follow; its own rows are not read.
    fn set(&mut self, set: &pb::ResultSet, rows: u64) {
        self.str(&set.query_id);
        self.str(&set.level);
        self.str(&set.error);
        self.u64(set.columns.len() as u64);
        for column in &set.columns {
            self.str(&column.name);
            self.str(&column.r#type);
        }
        self.u64(rows);
    }

    fn row(&mut self, row: &pb::Row) {
        self.u64(row.values.len() as u64);
        for value in &row.values {
            self.value(value);
        }
    }

    fn finish(self) -> String {
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Returns the digest of a run's content: its identity (site, hierarchy, period, catalog,
/// level) and every result set, leaving out run id, sequence and timing.
pub fn run_digest(run: &pb::Run) -> String {
    let mut c = run_header(run);
    c.results(&run.results);
    c.finish()
}

fn run_header(run: &pb::Run) -> Canonical {
    let mut c = Canonical::new("hrs.v1.Run");
    c.str(&run.site);
    c.str(&run.hierarchy_id.to_ascii_lowercase());
    c.str(&run.period);
    c.str(&run.catalog_version);
    c.str(&run.level);
    // Only keyed runs add the key's fingerprint, so plain runs keep their earlier digests.
    if !run.hash_key_id.is_empty() {
        c.str(&run.hash_key_id);
    }
    c
}

/// A run's digest computed piece by piece, for runs too large to hold in memory: equal to
/// [`run_digest`] when fed the header, then every result set in query-id order, each
/// followed by its rows in order.
pub struct RunDigest(Canonical);

impl RunDigest {
    /// Starts with the run's own fields (its results are not read) and the number of
    /// result sets that will follow.
    pub fn new(header: &pb::Run, sets: u64) -> Self {
        let mut c = run_header(header);
        c.u64(sets);
        Self(c)
    }

    /// Adds a result set's fields and its row count; its rows follow with [`Self::row`].
    pub fn set(&mut self, set: &pb::ResultSet, rows: u64) {
        self.0.set(set, rows);
    }

    /// Adds one row of the current result set.
    pub fn row(&mut self, row: &pb::Row) {
        self.0.row(row);
    }

    /// Returns the digest.
    pub fn finish(self) -> String {
        self.0.finish()
    }
}

/// Returns the digest of a merged period: every site's result sets in site order, leaving
/// out run ids, sequences and timing.
pub fn merged_digest(period: &pb::MergedPeriod) -> String {
    let mut sites: Vec<&pb::SiteResults> = period.sites.iter().collect();
    sites.sort_by(|a, b| a.site.cmp(&b.site));
    let mut digest = MergedDigest::new(period, sites.len() as u64);
    for site in sites {
        digest.site(&site.site, site.results.len() as u64);
        let mut sets: Vec<&pb::ResultSet> = site.results.iter().collect();
        sets.sort_by(|a, b| a.query_id.cmp(&b.query_id));
        for set in sets {
            digest.set(set, set.rows.len() as u64);
            for row in &set.rows {
                digest.row(row);
            }
        }
    }
    digest.finish()
}

/// A merged period's digest computed piece by piece, for periods too large to hold in
/// memory: equal to [`merged_digest`] when fed the period's own fields, then every site in
/// site-code order, each site's result sets in query-id order, each set followed by its
/// rows in order.
pub struct MergedDigest {
    canonical: Canonical,
    /// The period's missing sites, sorted: they close the digest.
    missing: Vec<String>,
}

impl MergedDigest {
    /// Starts with the period's own fields (its sites are not read) and the number of
    /// sites that will follow.
    pub fn new(header: &pb::MergedPeriod, sites: u64) -> Self {
        let mut c = Canonical::new("hrs.v1.MergedPeriod");
        c.str(&header.hierarchy_hash);
        c.str(&header.period);
        c.str(&header.catalog_version);
        c.str(&header.level);
        c.u64(sites);
        let mut missing = header.missing_sites.clone();
        missing.sort();
        Self {
            canonical: c,
            missing,
        }
    }

    /// Adds a site's code and the number of its result sets, which follow with
    /// [`Self::set`].
    pub fn site(&mut self, site: &str, sets: u64) {
        self.canonical.str(site);
        self.canonical.u64(sets);
    }

    /// Adds a result set's fields and its row count; its rows follow with [`Self::row`].
    pub fn set(&mut self, set: &pb::ResultSet, rows: u64) {
        self.canonical.set(set, rows);
    }

    /// Adds one row of the current result set.
    pub fn row(&mut self, row: &pb::Row) {
        self.canonical.row(row);
    }

    /// Returns the digest.
    pub fn finish(mut self) -> String {
        self.canonical.u64(self.missing.len() as u64);
        for site in &self.missing {
            self.canonical.str(site);
        }
        self.canonical.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> pb::Run {
        pb::Run {
            run_id: "a".into(),
            sequence: 1,
            site: "P01".into(),
            hierarchy_id: "6f9619ff-8b86-d011-b42d-00c04fc964ff".into(),
            period: "2026-W48".into(),
            catalog_version: "v".into(),
            level: "Basic".into(),
            started_at: "t0".into(),
            finished_at: "t1".into(),
            results: vec![pb::ResultSet {
                query_id: "Q".into(),
                level: "Basic".into(),
                columns: vec![],
                rows: vec![pb::Row {
                    values: vec![(&crate::Value::Int(3)).into()],
                }],
                error: String::new(),
                duration_ms: 5,
            }],
            digest: String::new(),
            hash_key_id: String::new(),
        }
    }

    #[test]
    fn keyed_runs_digest_their_key() {
        let plain = run();
        let keyed = pb::Run {
            hash_key_id: "0123456789abcdef".into(),
            ..plain.clone()
        };
        assert_ne!(run_digest(&plain), run_digest(&keyed));
    }

    #[test]
    fn run_digest_ignores_identity_and_timing_but_not_content() {
        let a = run();
        let mut b = run();
        b.run_id = "b".into();
        b.sequence = 9;
        b.started_at = "other".into();
        b.results[0].duration_ms = 7;
        assert_eq!(run_digest(&a), run_digest(&b));
        b.results[0].rows[0].values[0] = (&crate::Value::Int(4)).into();
        assert_ne!(run_digest(&a), run_digest(&b));
    }

    #[test]
    fn text_and_int_of_same_spelling_differ() {
        let a = run();
        let mut b = run();
        b.results[0].rows[0].values[0] = (&crate::Value::Text("3".into())).into();
        assert_ne!(run_digest(&a), run_digest(&b));
    }

    /// A merged period of two sites, out of order, with a missing site.
    fn period() -> pb::MergedPeriod {
        let mut other = run().results[0].clone();
        other.query_id = "A".into();
        pb::MergedPeriod {
            hierarchy_hash: "h".into(),
            period: "2026-W48".into(),
            catalog_version: "v".into(),
            level: "Basic".into(),
            sites: vec![
                pb::SiteResults {
                    site: "P02".into(),
                    results: vec![run().results[0].clone(), other],
                    ..Default::default()
                },
                pb::SiteResults {
                    site: "P01".into(),
                    results: run().results,
                    ..Default::default()
                },
            ],
            missing_sites: vec!["P09".into(), "P03".into()],
            ..Default::default()
        }
    }

    #[test]
    fn merged_digests_keep_their_value() {
        // Pinned: a stored period's digest must not change with the code computing it.
        assert_eq!(
            merged_digest(&period()),
            "70edb417016546d719e10ac618d1611db430bcc262a165aa685f407c1fed3a79"
        );
    }
}
