//! A merged period's encoding made from encodings it copies without holding them: from the
//! stored runs of its sites, so the aggregator sends a period of any size in chunks with
//! flat memory ([`MergedEncoding::build`]), and from a stored period, so the connection
//! point sends it out reshaped for the intake the same way ([`MergedEncoding::outbound`]).
//!
//! The encoding is a list of segments: small literal bytes (keys, lengths, the period's and
//! each site's own fields, the digest) and ranges of the sources' encodings, one per result
//! set kept, copied verbatim. Building it reads each source's own fields and its sets'
//! fields, then its kept rows once, one at a time, for the digest; reading a range of it
//! reads only the source ranges it overlaps.
//!
//! What `build` holds is what the aggregator's `merge` makes of the same runs, as prost
//! encodes it: sites in code order, each with its run's result sets of a level allowed at
//! the period's, in the run's order; the digest at the end. `mode` is not set: the
//! connection point sets it on the way out ([`mode_field`], or `outbound`).

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use hrs_proto::v1 as pb;
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint};

use crate::bytes::RunBytes;
use crate::digest::MergedDigest;
use crate::encoded::{EncodedError, RUN_SHAPE};
use crate::encoded_period::{
    MAX_PERIOD_SETS, MAX_SITES, PERIOD_SITES, SITE_RESULTS, site_fields, walk_period, walk_site,
};
use crate::ids::{Level, Period, SiteCode};
use crate::wire::{
    Cursor, MAX_ALL_SET_FIELDS, SetSpan, field, for_each_row, read_set, walk_message,
};

/// What a merged period says about itself, besides its sites.
#[derive(Debug, Clone)]
pub struct MergedHeader {
    /// The one-way hash of the hierarchy's ID, under which the period leaves it.
    pub hierarchy_hash: String,
    /// The period merged.
    pub period: Period,
    /// The catalog version the period is merged under.
    pub catalog_version: String,
    /// The level the period's data is limited to: sets of higher levels are left out.
    pub level: Level,
    /// The sites expected but without a run when the period was merged.
    pub missing_sites: Vec<SiteCode>,
}

/// Why a merged encoding could not be built from a period's runs.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A run could not be read, or its encoding is not a run's.
    #[error("run {index} of the period: {error}")]
    Run {
        /// Its place among the runs given.
        index: usize,
        /// What went wrong.
        #[source]
        error: EncodedError,
    },
    /// A run covers another period.
    #[error("site {site}'s run covers period {found}, not {period}")]
    OtherPeriod {
        /// The run's site.
        site: String,
        /// The period the run names.
        found: String,
        /// The period being merged.
        period: Period,
    },
    /// Two runs of one site were given: a period carries one run per site.
    #[error("site {0} has two runs in the period")]
    SiteTwice(String),
    /// The period is beyond what a receiver accepts.
    #[error("the period is too large: {0}")]
    TooLarge(String),
    /// The period to reshape could not be read, or its encoding is not a merged period's.
    #[error("the period: {0}")]
    Period(#[source] EncodedError),
}

/// Where a segment's bytes come from.
#[derive(Debug, Clone, Copy)]
enum Piece {
    /// The literal bytes from this offset on.
    Literal { at: usize },
    /// The bytes of source `source` (a run, or a whole period) from `offset` on.
    Source { source: usize, offset: u64 },
}

/// A stretch of the encoding, from one place.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Where it starts in the encoding.
    start: u64,
    /// Its length, never 0.
    len: u64,
    piece: Piece,
}

/// A merged period's encoding built from encodings it copies ranges of (its sites' runs,
/// or a period it reshapes), read a range at a time.
pub struct MergedEncoding {
    /// The encodings copied from (the sites' runs in site order, or the one period
    /// reshaped); segments name them by index.
    sources: Vec<Arc<dyn RunBytes>>,
    /// Every literal segment's bytes, back to back.
    literals: Vec<u8>,
    /// The segments, in order, each starting where the one before ends.
    segments: Vec<Segment>,
    size: u64,
    digest: String,
}

/// A site of a period being reshaped: its own fields as they leave, and where its kept sets
/// lie in the period.
struct OutboundSite {
    own: pb::SiteResults,
    sets: Vec<Range<u64>>,
}

/// A run to merge: its encoding and its own fields.
struct SiteRun {
    index: usize,
    bytes: Arc<dyn RunBytes>,
    fields: pb::Run,
}

impl MergedEncoding {
    /// Builds the encoding of the period merged from `runs` (one per site, each the
    /// encoding of a run the run check accepted), as the aggregator's `merge` would merge
    /// them decoded. Where `merge` would drop a run of another period or keep two runs of
    /// one site (a period no receiver accepts), this refuses. Reads each run a window at a
    /// time and holds only one run's set fields at a time.
    pub fn build(header: MergedHeader, runs: Vec<Arc<dyn RunBytes>>) -> Result<Self, BuildError> {
        if runs.len() > MAX_SITES {
            return Err(BuildError::TooLarge(format!(
                "{} sites; at most {MAX_SITES}",
                runs.len()
            )));
        }
        let mut sites = Vec::with_capacity(runs.len());
        let mut codes = HashSet::new();
        for (index, bytes) in runs.into_iter().enumerate() {
            let fields =
                run_fields(bytes.as_ref()).map_err(|error| BuildError::Run { index, error })?;
            if fields.period != header.period.to_string() {
                return Err(BuildError::OtherPeriod {
                    site: fields.site,
                    found: fields.period,
                    period: header.period,
                });
            }
            if !codes.insert(fields.site.clone()) {
                return Err(BuildError::SiteTwice(fields.site));
            }
            sites.push(SiteRun {
                index,
                bytes,
                fields,
            });
        }
        sites.sort_by(|a, b| a.fields.site.cmp(&b.fields.site));

        let own = pb::MergedPeriod {
            hierarchy_hash: header.hierarchy_hash,
            period: header.period.to_string(),
            catalog_version: header.catalog_version,
            level: header.level.as_str().to_owned(),
            missing_sites: header
                .missing_sites
                .iter()
                .map(SiteCode::to_string)
                .collect(),
            ..Default::default()
        };
        let mut out = Segments::default();
        out.open(&own);
        let mut digest = MergedDigest::new(&own, sites.len() as u64);
        let mut all_sets = 0usize;
        for (run, site) in sites.iter().enumerate() {
            let error = |error| BuildError::Run {
                index: site.index,
                error,
            };
            let mut cursor = Cursor::new(site.bytes.as_ref(), "run");
            let mut sets = kept_sets(&mut cursor, header.level).map_err(error)?;
            all_sets += sets.len();
            if all_sets > MAX_PERIOD_SETS {
                return Err(BuildError::TooLarge(format!(
                    "more than {MAX_PERIOD_SETS} result sets"
                )));
            }
            out.site(
                run,
                &run_site(&site.fields),
                sets.iter().map(|set| set.start..set.end),
            );

            digest.site(&site.fields.site, sets.len() as u64);
            sets.sort_by(|a, b| a.fields.query_id.cmp(&b.fields.query_id));
            for set in &sets {
                digest.set(&set.fields, set.rows);
                for_each_row(&mut cursor, "run.results", set.start, set.end, |_, row| {
                    digest.row(row);
                    Ok::<_, EncodedError>(())
                })
                .map_err(error)?;
            }
        }
        let digest = digest.finish();
        out.close(own.missing_sites, &digest, "");
        Ok(out.into_encoding(sites.into_iter().map(|site| site.bytes).collect(), digest))
    }

    /// Builds the encoding of `period` (the encoding of a merged period the period check
    /// accepted) as it may leave the hierarchy, as the connection point's `outbound` makes
    /// it of the decoded period: its level is the lower of the period's and `level`; only
    /// result sets of a level allowed at that are kept (a set whose level does not parse is
    /// dropped); site codes, present and missing, are replaced by `rename` of them unless
    /// that level is Full; run ids and sequences are cleared; `mode` is set and the digest
    /// recomputed. Sites and sets keep the period's order, each kept set copied verbatim,
    /// so a period prost encoded gives what prost encodes of the reshaped one. Reads the
    /// period a window at a time: every site's and set's own fields, then the kept rows
    /// once for the digest.
    pub fn outbound(
        period: Arc<dyn RunBytes>,
        level: Level,
        rename: impl Fn(&str) -> String,
        mode: &str,
    ) -> Result<Self, BuildError> {
        let (fields, spans) = walk_period(period.as_ref()).map_err(BuildError::Period)?;
        // The period check refuses a level that does not parse; were one to come here, the
        // strictest level is the safe reading, as `outbound` reads it.
        let collected = fields.level.parse().unwrap_or(Level::Basic);
        let effective = collected.min(level);
        // Site codes never leave below Full.
        let name = |code: &str| {
            if effective == Level::Full {
                code.to_owned()
            } else {
                rename(code)
            }
        };
        let own = pb::MergedPeriod {
            hierarchy_hash: fields.hierarchy_hash,
            period: fields.period,
            catalog_version: fields.catalog_version,
            level: effective.as_str().to_owned(),
            missing_sites: fields.missing_sites.iter().map(|code| name(code)).collect(),
            ..Default::default()
        };

        // The digest takes sites in the order of their new names, which a hash shuffles:
        // a skim over every site's own fields gives that order before any set is read.
        let mut skim = Cursor::skimming(period.as_ref(), "period");
        let mut sites = Vec::with_capacity(spans.len());
        for (i, &(start, end)) in spans.iter().enumerate() {
            let site = site_fields(&mut skim, i, start, end).map_err(BuildError::Period)?;
            sites.push(OutboundSite {
                own: pb::SiteResults {
                    site: name(&site.site),
                    started_at: site.started_at,
                    finished_at: site.finished_at,
                    ..Default::default()
                },
                sets: Vec::new(),
            });
        }
        let mut by_name: Vec<usize> = (0..sites.len()).collect();
        // Stable, as `merged_digest`'s sort of the reshaped period's sites.
        by_name.sort_by(|&a, &b| sites[a].own.site.cmp(&sites[b].own.site));

        let mut digest = MergedDigest::new(&own, sites.len() as u64);
        let mut cursor = Cursor::new(period.as_ref(), "period");
        for i in by_name {
            let (start, end) = spans[i];
            let (_, sets) = walk_site(&mut cursor, i, start, end).map_err(BuildError::Period)?;
            let mut kept: Vec<(usize, SetSpan)> = sets
                .into_iter()
                .enumerate()
                .filter(|(_, set)| allowed(&set.fields, effective))
                .collect();
            let site = &mut sites[i];
            site.sets = kept.iter().map(|(_, set)| set.start..set.end).collect();
            digest.site(&site.own.site, kept.len() as u64);
            kept.sort_by(|(_, a), (_, b)| a.fields.query_id.cmp(&b.fields.query_id));
            for (j, set) in &kept {
                digest.set(&set.fields, set.rows);
                let here = format!("period.sites[{i}].results[{j}]");
                for_each_row(&mut cursor, &here, set.start, set.end, |_, row| {
                    digest.row(row);
                    Ok::<_, EncodedError>(())
                })
                .map_err(BuildError::Period)?;
            }
        }

        let mut out = Segments::default();
        out.open(&own);
        for site in &sites {
            out.site(0, &site.own, site.sets.iter().cloned());
        }
        let digest = digest.finish();
        out.close(own.missing_sites, &digest, mode);
        Ok(out.into_encoding(vec![period], digest))
    }

    /// Returns the period's digest, which the encoding carries.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

impl RunBytes for MergedEncoding {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let end = offset
            .checked_add(len as u64)
            .filter(|end| *end <= self.size)
            .ok_or_else(|| std::io::Error::other("read past the end of the period"))?;
        let mut out = Vec::with_capacity(len);
        let mut next = self
            .segments
            .partition_point(|segment| segment.start + segment.len <= offset);
        let mut pos = offset;
        while pos < end {
            let segment = self.segments.get(next).ok_or_else(|| {
                std::io::Error::other(format!("no segment of the period holds byte {pos}"))
            })?;
            let from = pos - segment.start;
            let take = (segment.len - from).min(end - pos);
            let len = usize::try_from(take).map_err(std::io::Error::other)?;
            match segment.piece {
                Piece::Literal { at } => {
                    let at = at + usize::try_from(from).map_err(std::io::Error::other)?;
                    let bytes = self.literals.get(at..at + len).ok_or_else(|| {
                        std::io::Error::other(format!(
                            "the period's literal bytes end before {pos}"
                        ))
                    })?;
                    out.extend_from_slice(bytes);
                }
                Piece::Source { source, offset } => {
                    let bytes = self.sources.get(source).ok_or_else(|| {
                        std::io::Error::other(format!("the period has no source {source}"))
                    })?;
                    let bytes = bytes.read_at(offset + from, len)?;
                    if bytes.len() != len {
                        return Err(std::io::Error::other(
                            "a source read returned a short range",
                        ));
                    }
                    out.extend(bytes);
                }
            }
            pos += take;
            next += 1;
        }
        Ok(out)
    }
}

/// Returns the bytes that set an encoded merged period's `mode` when appended to it: a
/// later field of a protobuf encoding is read as if it were in place, and the last value
/// of a field wins, so the connection point marks a period on the way out without reading
/// it. Empty for an empty mode, which prost does not write.
pub fn mode_field(mode: &str) -> Vec<u8> {
    pb::MergedPeriod {
        mode: mode.to_owned(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The own fields of the site a run makes in a merged period: the run's identity and timing.
fn run_site(run: &pb::Run) -> pb::SiteResults {
    pb::SiteResults {
        site: run.site.clone(),
        run_id: run.run_id.clone(),
        sequence: run.sequence,
        started_at: run.started_at.clone(),
        finished_at: run.finished_at.clone(),
        results: Vec::new(),
    }
}

/// A run's own fields, its result sets jumped over.
fn run_fields(source: &dyn RunBytes) -> Result<pb::Run, EncodedError> {
    let mut cursor = Cursor::skimming(source, "run");
    let own = walk_message(&mut cursor, 0, source.size(), &RUN_SHAPE, |_, _, _, _| {
        Ok(())
    })?;
    pb::Run::decode(own.as_slice()).map_err(|e| field("run", format!("malformed: {e}")))
}

/// A run's result sets of a level allowed at `level`, in the run's order, as `merge` keeps
/// them.
fn kept_sets(cursor: &mut Cursor<'_>, level: Level) -> Result<Vec<SetSpan>, EncodedError> {
    let mut sets = Vec::new();
    let mut set_fields = 0usize;
    let size = cursor.size;
    walk_message(cursor, 0, size, &RUN_SHAPE, |cursor, index, start, end| {
        let span = read_set(cursor, &format!("run.results[{index}]"), start, end)?;
        if allowed(&span.fields, level) {
            set_fields += span.fields.encoded_len();
            if set_fields > MAX_ALL_SET_FIELDS {
                return Err(field(
                    "run.results",
                    format!("fields other than rows exceed {MAX_ALL_SET_FIELDS} bytes in all"),
                ));
            }
            sets.push(span);
        }
        Ok(())
    })?;
    Ok(sets)
}

/// Whether a result set is kept in a period of `level`: only if its own level provably is
/// allowed at it, so a set whose level does not parse is dropped.
fn allowed(set: &pb::ResultSet, level: Level) -> bool {
    set.level
        .parse::<Level>()
        .is_ok_and(|l| l.allowed_at(level))
}

/// The encoding's segments as they are made, in order.
#[derive(Default)]
struct Segments {
    literals: Vec<u8>,
    segments: Vec<Segment>,
    size: u64,
}

impl Segments {
    /// Starts the period with its fields before its sites (1 to 4), as prost orders them.
    fn open(&mut self, own: &pb::MergedPeriod) {
        self.literal(
            &pb::MergedPeriod {
                hierarchy_hash: own.hierarchy_hash.clone(),
                period: own.period.clone(),
                catalog_version: own.catalog_version.clone(),
                level: own.level.clone(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
    }

    /// Ends the period with its fields after its sites: the missing sites (6), the digest
    /// (7) and the mode (8, not written when empty).
    fn close(&mut self, missing_sites: Vec<String>, digest: &str, mode: &str) {
        self.literal(
            &pb::MergedPeriod {
                missing_sites,
                digest: digest.to_owned(),
                mode: mode.to_owned(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
    }

    /// The encoding these segments make, copying from `sources`.
    fn into_encoding(self, sources: Vec<Arc<dyn RunBytes>>, digest: String) -> MergedEncoding {
        MergedEncoding {
            sources,
            literals: self.literals,
            segments: self.segments,
            size: self.size,
            digest,
        }
    }

    /// Adds literal bytes; literals written back to back make one segment.
    fn literal(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match self.segments.last_mut() {
            Some(Segment {
                len,
                piece: Piece::Literal { .. },
                ..
            }) => *len += bytes.len() as u64,
            _ => self.segments.push(Segment {
                start: self.size,
                len: bytes.len() as u64,
                piece: Piece::Literal {
                    at: self.literals.len(),
                },
            }),
        }
        self.literals.extend_from_slice(bytes);
        self.size += bytes.len() as u64;
    }

    /// Adds `len` bytes of source `source` from `offset` on.
    fn source(&mut self, source: usize, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        self.segments.push(Segment {
            start: self.size,
            len,
            piece: Piece::Source { source, offset },
        });
        self.size += len;
    }

    /// Adds a site of the period (field 5) as prost writes it: its own fields from `own`
    /// (its results ignored), and its sets' contents copied from source `source` at `sets`.
    fn site(
        &mut self,
        source: usize,
        own: &pb::SiteResults,
        sets: impl Iterator<Item = Range<u64>> + Clone,
    ) {
        // Fields 1 to 3, the sets (4), then fields 5 and 6.
        let head = pb::SiteResults {
            site: own.site.clone(),
            run_id: own.run_id.clone(),
            sequence: own.sequence,
            ..Default::default()
        }
        .encode_to_vec();
        let tail = pb::SiteResults {
            started_at: own.started_at.clone(),
            finished_at: own.finished_at.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        let sets_len: u64 = sets
            .clone()
            .map(|set| {
                let len = set.end - set.start;
                length_prefix(SITE_RESULTS, len).len() as u64 + len
            })
            .sum();
        let len = head.len() as u64 + sets_len + tail.len() as u64;
        self.literal(&length_prefix(PERIOD_SITES, len));
        self.literal(&head);
        for set in sets {
            let len = set.end - set.start;
            self.literal(&length_prefix(SITE_RESULTS, len));
            self.source(source, set.start, len);
        }
        self.literal(&tail);
    }
}

/// The key of length-delimited field `number` and the length that follows it.
fn length_prefix(number: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    // Field numbers here are those of run.proto, all below 16.
    encode_key(number as u32, WireType::LengthDelimited, &mut out);
    encode_varint(len, &mut out);
    out
}

#[cfg(test)]
mod tests;
