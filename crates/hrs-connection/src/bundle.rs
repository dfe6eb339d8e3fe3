//! Offline bundles: the periods the intake has not acknowledged, as they leave the
//! hierarchy, in one file an administrator carries on removable media to an
//! internet-facing machine.
//!
//! A bundle is a plain tar file: one `periods/<period>.pb` per period (its encoding exactly
//! as the online path submits it, so `connect` streams it to the intake in the same
//! resumable chunks without decoding it), then `manifest.json` (what it holds: hierarchy,
//! level, tool version, each period's file, size, SHA-256, digest and rows), then
//! `SHA256SUMS`, so `tar -xf` and `sha256sum -c SHA256SUMS` are enough to check it, and
//! `hrs connection-tool export` shows the rows it carries as CSV for review. Nothing is
//! used that does not verify: a bundle whose files no longer match their checksums and
//! digests (damaged media, an edit that did not also rewrite them) is refused whole.
//! Checksums catch damage and careless edits, not a forger who rewrites them: a connection
//! point with a certificate (`[tls]`) also signs `SHA256SUMS` with its key, into
//! `SHA256SUMS.sig` (what `openssl dgst -sha256 -sign` writes) beside its certificate
//! `signer.pem`, and `connect` checks that signature against the hierarchy's CA, and that
//! the certificate names this hierarchy's connection point, before it uploads anything.
//!
//! Writing is resumable. Periods stream into `hrs-<hierarchy>.tar.part` beside a small
//! progress file, both made durable every [`CHECKPOINT_BYTES`] and after each period;
//! after a cut (the tool stopped, the media pulled, the machine lost power) the next
//! `prepare` goes on from the last checkpoint when the same periods are still unsent. The
//! bundle is read back and checked before it gets its final name.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hrs_core::Period;
use hrs_core::bytes::{FileRange, RunBytes, chunk_len, sha256_of};
use hrs_core::encoded_period::check_merged_encoded;
use hrs_proto::v1 as pb;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::offer::MAX_PERIOD_BYTES;
use crate::offline::{OfflineError, Report};

/// The format tag of bundles written by this version.
pub const BUNDLE_FORMAT: &str = "hrs-bundle/4";

/// The format tag of the progress file of a bundle being written.
const PART_FORMAT: &str = "hrs-prepare/1";

/// The file a bundle describes itself in.
const MANIFEST: &str = "manifest.json";

/// The checksums of a bundle's other files, in `sha256sum` format.
const SUMS: &str = "SHA256SUMS";

/// The connection point's signature over [`SUMS`], when it has a key.
const SIGNATURE: &str = "SHA256SUMS.sig";

/// The certificate (PEM) [`SIGNATURE`] verifies against.
const SIGNER: &str = "signer.pem";

/// The small files of a bundle, read whole: everything but its periods.
const LISTINGS: [&str; 4] = [MANIFEST, SUMS, SIGNATURE, SIGNER];

/// Largest manifest or checksum list read: far above what any real bundle lists.
const MAX_LISTING_BYTES: u64 = 16 << 20;

/// How much is written between two durable checkpoints of a bundle being written: a cut
/// loses at most this much work.
pub const CHECKPOINT_BYTES: u64 = 64 << 20;

/// How much of a period is read and written at a time.
const WRITE_BYTES: usize = 4 << 20;

/// A tar block: headers and padding are counted in these.
const BLOCK: u64 = 512;

/// What a bundle says it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// Version of the tool that prepared it.
    pub tool_version: String,
    /// The hierarchy's hashed ID: bundles of several hierarchies can share a folder.
    pub hierarchy_hash: String,
    /// RFC 3339 time it was prepared.
    pub created_at: String,
    /// The level configured when it was prepared (what it holds is at most this).
    pub level: String,
    /// The intake the connection point is configured with, if any: `connect` uses it.
    pub intake: Option<String>,
    /// The periods, oldest first.
    pub periods: Vec<BundlePeriod>,
}

/// One period in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundlePeriod {
    /// The period (ISO week).
    pub period: String,
    /// Its file in the bundle.
    pub file: String,
    /// SHA-256 of that file, lowercase hex.
    pub sha256: String,
    /// Size of that file.
    pub bytes: u64,
    /// Merged digest of the period as it leaves.
    pub digest: String,
    /// Merged digest of the period as the connection point received it: `import` marks
    /// that version sent.
    pub received_digest: String,
    /// Result rows, over all sites and queries.
    pub rows: u64,
}

/// A bundle read back and verified.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The file.
    pub path: PathBuf,
    /// What it says it holds.
    pub manifest: BundleManifest,
    /// Each period's encoding as it leaves, in manifest order, read from the bundle file
    /// where it lies.
    pub periods: Vec<Arc<FileRange>>,
    /// `SHA256SUMS` as read, which the signature covers (and through it every file).
    pub sums: Vec<u8>,
    /// The connection point's signature over `sums` with its certificate; none when the
    /// connection point that prepared it had no key.
    pub signature: Option<hrs_pki::Signed>,
}

impl Bundle {
    /// Decodes every period whole, for a review of what a bundle holds; the round trip
    /// itself never does (it streams each period where it lies).
    pub fn decoded(&self) -> Result<Vec<pb::MergedPeriod>, OfflineError> {
        self.periods
            .iter()
            .map(|range| {
                let unreadable = |problem: String| OfflineError::Tampered {
                    path: self.path.clone(),
                    problem,
                };
                let len = usize::try_from(range.size()).map_err(|e| unreadable(e.to_string()))?;
                let bytes = range.read_at(0, len).map_err(io_at(&self.path))?;
                pb::MergedPeriod::decode(&bytes[..]).map_err(|e| unreadable(e.to_string()))
            })
            .collect()
    }
}

/// A period to write into a bundle: its encoding as it leaves, and what names it.
pub(crate) struct Leaving {
    /// The period.
    pub period: Period,
    /// Its merged digest as the connection point received it.
    pub received_digest: String,
    /// Its merged digest as it leaves.
    pub digest: String,
    /// Its encoding as it leaves.
    pub bytes: Arc<dyn RunBytes>,
}

/// What a bundle says of itself besides its periods.
pub(crate) struct Head {
    /// The hierarchy's hashed ID.
    pub hierarchy_hash: String,
    /// When it is prepared, unless an earlier cut attempt is resumed (which keeps its own).
    pub created_at: String,
    /// The level configured.
    pub level: String,
    /// The intake configured, if any.
    pub intake: Option<String>,
    /// The connection point's key and certificate, which sign the bundle; none without
    /// `[tls]`.
    pub signer: Option<Arc<hrs_pki::Signer>>,
}

/// A bundle written.
pub(crate) struct Written {
    /// Its final path.
    pub path: PathBuf,
    /// What it holds.
    pub manifest: BundleManifest,
    /// Its size.
    pub bytes: u64,
    /// Where an earlier, cut attempt was resumed, if one was.
    pub resumed_from: Option<u64>,
}

/// The progress file of a bundle being written: what it is for, and how far it is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartState {
    format: String,
    hierarchy_hash: String,
    created_at: String,
    level: String,
    intake: Option<String>,
    /// Each period planned: name, digests and size.
    periods: Vec<PartPeriod>,
    /// SHA-256 of each period file written whole, in order.
    finished: Vec<String>,
    /// Bytes of the part file known to be on the media.
    durable: u64,
}

/// A period planned for a bundle being written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartPeriod {
    period: String,
    received_digest: String,
    digest: String,
    bytes: u64,
}

impl PartState {
    /// True when this progress file is for the same bundle: the same periods at the same
    /// versions, hierarchy, level and intake.
    fn same_bundle(&self, other: &Self) -> bool {
        self.format == other.format
            && self.hierarchy_hash == other.hierarchy_hash
            && self.level == other.level
            && self.intake == other.intake
            && self.periods == other.periods
    }
}

/// A file-name-safe form of a hashed hierarchy ID (Base64 with `/` and `+`).
pub fn hierarchy_dir_name(hierarchy_hash: &str) -> String {
    hierarchy_hash
        .chars()
        .filter(|c| *c != '=')
        .map(|c| match c {
            '/' => '_',
            '+' => '-',
            c => c,
        })
        .collect()
}

/// True for a hashed hierarchy ID as HRS writes it: Base64 of a SHA-256, 44 characters.
fn is_hierarchy_hash(text: &str) -> bool {
    text.len() == 44
        && text.ends_with('=')
        && text[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The file a period is kept in inside a bundle.
fn period_file(period: &str) -> String {
    format!("periods/{period}.pb")
}

/// `len` rounded up to whole tar blocks.
fn padded(len: u64) -> u64 {
    len.div_ceil(BLOCK) * BLOCK
}

/// Where each period's header starts in the bundle, and where the periods end.
fn layout(sizes: &[u64]) -> (Vec<u64>, u64) {
    let mut starts = Vec::with_capacity(sizes.len());
    let mut at = 0;
    for size in sizes {
        starts.push(at);
        at += BLOCK + padded(*size);
    }
    (starts, at)
}

/// A tar header for a plain file of `size` bytes named `name`, made at `mtime`.
fn header(name: &str, size: u64, mtime: u64) -> io::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_path(name)?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Ok(header)
}

/// Writes zeros up to the next tar block after `len` bytes of a file.
fn pad(file: &mut File, len: u64) -> io::Result<()> {
    let zeros = padded(len) - len;
    file.write_all(&vec![0; usize::try_from(zeros).unwrap_or(0)])
}

/// Lowercase hex of a SHA-256.
fn hex(digest: &[u8]) -> String {
    hex_of(digest)
}

/// Lowercase hex of `bytes`, as checksums and signatures are written in text.
pub(crate) fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OfflineError + '_ {
    move |source| OfflineError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads the progress file of an earlier attempt, if there is one that reads.
fn read_state(path: &Path) -> Option<PartState> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Makes what was written so far durable, then says so in the progress file: the file
/// first, so the progress file never claims bytes the media does not hold.
fn checkpoint(file: &File, state: &PartState, state_path: &Path) -> Result<(), OfflineError> {
    file.sync_data().map_err(io_at(state_path))?;
    let bytes = serde_json::to_vec(state).map_err(|e| OfflineError::Io {
        path: state_path.to_owned(),
        source: io::Error::other(e),
    })?;
    write_atomic(state_path, &bytes).map_err(io_at(state_path))
}

/// Writes `periods` into a bundle in `dest` (resuming an earlier attempt cut short when it
/// was for the same periods), reads it back, and gives it its final name.
pub(crate) fn write(
    dest: &Path,
    head: Head,
    periods: &[Leaving],
    report: &dyn Report,
    mtime: u64,
) -> Result<Written, OfflineError> {
    std::fs::create_dir_all(dest).map_err(io_at(dest))?;
    let name = hierarchy_dir_name(&head.hierarchy_hash);
    let part = dest.join(format!("hrs-{name}.tar.part"));
    let state_path = dest.join(format!("hrs-{name}.prepare.json"));
    let sizes: Vec<u64> = periods.iter().map(|p| p.bytes.size()).collect();
    let (starts, periods_end) = layout(&sizes);
    let fresh = PartState {
        format: PART_FORMAT.to_owned(),
        hierarchy_hash: head.hierarchy_hash.clone(),
        created_at: head.created_at.clone(),
        level: head.level.clone(),
        intake: head.intake.clone(),
        periods: periods
            .iter()
            .map(|p| PartPeriod {
                period: p.period.to_string(),
                received_digest: p.received_digest.clone(),
                digest: p.digest.clone(),
                bytes: p.bytes.size(),
            })
            .collect(),
        finished: Vec::new(),
        durable: 0,
    };
    let on_media = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let mut state = match read_state(&state_path) {
        Some(earlier)
            if earlier.same_bundle(&fresh)
                && earlier.durable <= on_media
                && resumable(&earlier, &starts) =>
        {
            earlier
        }
        earlier => {
            if earlier.is_some() {
                report.line("the unsent periods changed since the last prepare was cut short: writing the bundle anew");
            }
            fresh
        }
    };
    let resumed_from = (state.durable > 0).then_some(state.durable);
    if let Some(at) = resumed_from {
        report.line(&format!(
            "resuming the bundle cut short at {at} of {periods_end} bytes"
        ));
    }
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&part)
        .map_err(io_at(&part))?;
    file.set_len(state.durable).map_err(io_at(&part))?;
    file.seek(SeekFrom::Start(state.durable))
        .map_err(io_at(&part))?;

    let mut progress = report.progress("writing the bundle", periods_end);
    progress.set(state.durable);
    for (i, period) in periods.iter().enumerate().skip(state.finished.len()) {
        let size = sizes[i];
        let data_start = starts[i] + BLOCK;
        let mut hasher = Sha256::new();
        let mut offset = state.durable.saturating_sub(data_start);
        if state.durable < data_start {
            let header = header(&period_file(&period.period.to_string()), size, mtime)
                .map_err(io_at(&part))?;
            file.write_all(header.as_bytes()).map_err(io_at(&part))?;
        } else {
            // The checksum covers the bytes written before the cut: they are the source's,
            // read again here, not the media's (the read-back below checks those).
            let mut at = 0;
            while at < offset {
                let len = chunk_len(offset, at, WRITE_BYTES);
                hasher.update(period.bytes.read_at(at, len).map_err(io_at(&part))?);
                at += len as u64;
            }
        }
        let mut since_checkpoint = 0;
        while offset < size {
            let len = chunk_len(size, offset, WRITE_BYTES);
            let bytes = period.bytes.read_at(offset, len).map_err(io_at(&part))?;
            hasher.update(&bytes);
            file.write_all(&bytes).map_err(io_at(&part))?;
            offset += len as u64;
            since_checkpoint += len as u64;
            progress.set(data_start + offset);
            if since_checkpoint >= CHECKPOINT_BYTES && offset < size {
                state.durable = data_start + offset;
                checkpoint(&file, &state, &state_path)?;
                since_checkpoint = 0;
            }
        }
        pad(&mut file, size).map_err(io_at(&part))?;
        state.finished.push(hex(&hasher.finalize()));
        state.durable = data_start + padded(size);
        checkpoint(&file, &state, &state_path)?;
    }
    progress.finish();

    let entries = read_back(&part, periods, &starts, &state, report)?;
    let manifest = BundleManifest {
        format: BUNDLE_FORMAT.to_owned(),
        tool_version: hrs_core::VERSION.to_owned(),
        hierarchy_hash: head.hierarchy_hash.clone(),
        created_at: state.created_at.clone(),
        level: head.level.clone(),
        intake: head.intake.clone(),
        periods: entries,
    };
    let mut manifest_bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| OfflineError::NotABundle {
            path: part.clone(),
            problem: e.to_string(),
        })?;
    manifest_bytes.push(b'\n');
    let mut sums = format!("{}  {MANIFEST}\n", sha256_hex(&manifest_bytes));
    for period in &manifest.periods {
        sums.push_str(&format!("{}  {}\n", period.sha256, period.file));
    }
    // A cut after the periods may have left part of a listing: it is written again.
    file.set_len(periods_end).map_err(io_at(&part))?;
    file.seek(SeekFrom::Start(periods_end))
        .map_err(io_at(&part))?;
    let mut listings = vec![
        (MANIFEST, manifest_bytes.clone()),
        (SUMS, sums.clone().into_bytes()),
    ];
    if let Some(signer) = &head.signer {
        let signed = signer
            .sign(sums.as_bytes())
            .map_err(|e| OfflineError::Unwritten {
                path: part.clone(),
                problem: format!("cannot sign it: {e}"),
            })?;
        listings.push((SIGNATURE, signed.signature));
        listings.push((SIGNER, signer.certificate_pem().into_bytes()));
    }
    for (name, bytes) in &listings {
        let header = header(name, bytes.len() as u64, mtime).map_err(io_at(&part))?;
        file.write_all(header.as_bytes()).map_err(io_at(&part))?;
        file.write_all(bytes).map_err(io_at(&part))?;
        pad(&mut file, bytes.len() as u64).map_err(io_at(&part))?;
    }
    // The end of the archive: two empty blocks.
    file.write_all(&[0; 2 * BLOCK as usize])
        .map_err(io_at(&part))?;
    file.sync_all().map_err(io_at(&part))?;
    let bytes = file.stream_position().map_err(io_at(&part))?;
    drop(file);

    let stamp: String = manifest
        .created_at
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    // The manifest's hash keeps two bundles of one second apart.
    let path = dest.join(format!(
        "hrs-{name}-{stamp}-{}.tar",
        &sha256_hex(&manifest_bytes)[..8]
    ));
    std::fs::rename(&part, &path).map_err(io_at(&path))?;
    sync_folder(dest).map_err(io_at(dest))?;
    // The bundle is whole under its name; a progress file left behind would only be
    // found stale and replaced.
    let _ = std::fs::remove_file(&state_path);
    Ok(Written {
        path,
        manifest,
        bytes,
        resumed_from,
    })
}

/// True when an earlier attempt's durable point lies where this version writes one: at a
/// period's header after the periods it says are whole, or inside the next one's data.
fn resumable(state: &PartState, starts: &[u64]) -> bool {
    let done = state.finished.len();
    let Some(&start) = starts.get(done) else {
        // Every period was written: the listings after them are written again.
        return done == starts.len();
    };
    let end = state
        .periods
        .get(done)
        .map_or(start, |p| start + BLOCK + p.bytes);
    state.durable == start || (start + BLOCK < state.durable && state.durable < end)
}

/// Reads every period back from the media and checks it (structure, catalog, digest),
/// returning each one's manifest entry: a bundle that would be refused at the other end is
/// never named as one.
fn read_back(
    part: &Path,
    periods: &[Leaving],
    starts: &[u64],
    state: &PartState,
    report: &dyn Report,
) -> Result<Vec<BundlePeriod>, OfflineError> {
    let total = periods.iter().map(|p| p.bytes.size()).sum();
    let mut progress = report.progress("reading the bundle back", total);
    let mut checked = 0;
    let mut entries = Vec::with_capacity(periods.len());
    for (i, period) in periods.iter().enumerate() {
        let file = File::open(part).map_err(io_at(part))?;
        let size = period.bytes.size();
        let range = FileRange::new(file, starts[i] + BLOCK, size);
        let unreadable = |problem: String| {
            // What is on the media is not what was written: start over next time.
            let _ = std::fs::remove_file(part);
            OfflineError::Unwritten {
                path: part.to_owned(),
                problem,
            }
        };
        let summary = check_merged_encoded(&range)
            .map_err(|e| unreadable(format!("{}: {e}", period.period)))?;
        if summary.digest != period.digest {
            return Err(unreadable(format!(
                "{} reads back with digest {}, not {}",
                period.period, summary.digest, period.digest
            )));
        }
        checked += size;
        progress.set(checked);
        entries.push(BundlePeriod {
            period: period.period.to_string(),
            file: period_file(&period.period.to_string()),
            sha256: state.finished[i].clone(),
            bytes: size,
            digest: period.digest.clone(),
            received_digest: period.received_digest.clone(),
            rows: summary.rows,
        });
    }
    progress.finish();
    Ok(entries)
}

/// Every bundle in `dir` (files named `hrs-*.tar`), in name order.
pub fn find_bundles(dir: &Path) -> Result<Vec<PathBuf>, OfflineError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_at(dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.is_file()
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|name| name.starts_with("hrs-") && name.ends_with(".tar"))
        })
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(OfflineError::NoBundles(dir.to_owned()));
    }
    Ok(found)
}

/// A file inside a bundle: where its bytes lie, or the bytes of a small listing.
struct Member {
    offset: u64,
    size: u64,
    listing: Option<Vec<u8>>,
}

/// Reads a bundle and verifies everything in it: its format, every file's SHA-256 against
/// the manifest and `SHA256SUMS`, no file more or less, and each period's structure,
/// catalog and digest, reading each period where it lies a range at a time. Anything that
/// fails refuses the whole bundle.
pub fn read_bundle_file(path: &Path) -> Result<Bundle, OfflineError> {
    let (tampered, not_a_bundle) = refusals(path);
    let members = list_members(path)?;
    let listing = |name: &str| members.get(name).and_then(|m| m.listing.as_deref());
    let manifest_bytes =
        listing(MANIFEST).ok_or_else(|| not_a_bundle(format!("it has no {MANIFEST}")))?;
    let manifest: BundleManifest = match serde_json::from_slice(manifest_bytes) {
        Ok(manifest) => manifest,
        Err(e) => {
            // An earlier version's bundle says so in its format field.
            let format = serde_json::from_slice::<serde_json::Value>(manifest_bytes)
                .ok()
                .and_then(|v| v.get("format")?.as_str().map(str::to_owned));
            return Err(match format {
                Some(format) if format != BUNDLE_FORMAT => not_a_bundle(format!(
                    "format {format:?}; this version reads {BUNDLE_FORMAT:?}: prepare it again with this version"
                )),
                _ => tampered(format!("{MANIFEST} does not read: {e}")),
            });
        }
    };
    if manifest.format != BUNDLE_FORMAT {
        return Err(not_a_bundle(format!(
            "format {:?}; this version reads {BUNDLE_FORMAT:?}",
            manifest.format
        )));
    }
    // The hash names a folder on the connecting machine: only its one form is accepted.
    if !is_hierarchy_hash(&manifest.hierarchy_hash) {
        return Err(tampered(format!(
            "{MANIFEST} names no hashed hierarchy ID (44 Base64 characters)"
        )));
    }
    // SHA256SUMS covers the manifest too, so a manifest edited to match edited periods
    // still shows unless both were rewritten.
    let sums_bytes = listing(SUMS).ok_or_else(|| tampered(format!("{SUMS} is missing")))?;
    let sums = String::from_utf8_lossy(sums_bytes);
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    for line in sums.lines() {
        let (sum, name) = line
            .split_once("  ")
            .ok_or_else(|| tampered(format!("{SUMS} has a malformed line")))?;
        let member = members
            .get(name)
            .ok_or_else(|| tampered(format!("{name} is listed but missing")))?;
        let actual = match &member.listing {
            Some(bytes) => sha256_hex(bytes),
            None => sha256_of(&open_range(path, member)?, WRITE_BYTES).map_err(io_at(path))?,
        };
        if actual != sum {
            return Err(tampered(format!("{name} does not match its SHA-256")));
        }
        if listed.insert(name.to_owned(), actual).is_some() {
            return Err(tampered(format!("{name} is listed twice in {SUMS}")));
        }
    }
    if !listed.contains_key(MANIFEST) {
        return Err(tampered(format!("{MANIFEST} is not in {SUMS}")));
    }
    let mut periods = Vec::new();
    for entry in &manifest.periods {
        let member = members
            .get(&entry.file)
            .ok_or_else(|| tampered(format!("{} is missing", entry.file)))?;
        let sum = listed
            .get(&entry.file)
            .ok_or_else(|| tampered(format!("{} is not in {SUMS}", entry.file)))?;
        if *sum != entry.sha256 || member.size != entry.bytes || member.listing.is_some() {
            return Err(tampered(format!(
                "{} does not match the manifest",
                entry.file
            )));
        }
        let range = open_range(path, member)?;
        let summary =
            check_merged_encoded(&range).map_err(|e| tampered(format!("{}: {e}", entry.file)))?;
        if summary.period.to_string() != entry.period
            || summary.digest != entry.digest
            || summary.hierarchy_hash != manifest.hierarchy_hash
            || summary.rows != entry.rows
        {
            return Err(tampered(format!(
                "{} holds another period, digest, hierarchy or row count than the manifest says",
                entry.file
            )));
        }
        periods.push(Arc::new(range));
    }
    let signature = match (listing(SIGNATURE), listing(SIGNER)) {
        (None, None) => None,
        (Some(signature), Some(pem)) => Some(hrs_pki::Signed {
            signature: signature.to_vec(),
            certificate: hrs_pki::sign::pem_to_der(&String::from_utf8_lossy(pem))
                .ok_or_else(|| tampered(format!("{SIGNER} holds no certificate")))?,
        }),
        (Some(_), None) => return Err(tampered(format!("{SIGNATURE} is there, {SIGNER} is not"))),
        (None, Some(_)) => return Err(tampered(format!("{SIGNER} is there, {SIGNATURE} is not"))),
    };
    let expected: BTreeSet<String> = manifest
        .periods
        .iter()
        .map(|p| p.file.clone())
        .chain([MANIFEST.to_owned(), SUMS.to_owned()])
        .chain(
            signature
                .is_some()
                .then(|| [SIGNATURE.to_owned(), SIGNER.to_owned()])
                .into_iter()
                .flatten(),
        )
        .collect();
    if let Some(extra) = members.keys().find(|name| !expected.contains(*name)) {
        return Err(tampered(format!(
            "it holds {extra}, which the manifest does not list"
        )));
    }
    Ok(Bundle {
        path: path.to_owned(),
        manifest,
        periods,
        sums: sums_bytes.to_vec(),
        signature,
    })
}

/// How a bundle at `path` is refused: as altered, or as no bundle this version reads.
fn refusals(
    path: &Path,
) -> (
    impl Fn(String) -> OfflineError + '_,
    impl Fn(String) -> OfflineError + '_,
) {
    (
        |problem| OfflineError::Tampered {
            path: path.to_owned(),
            problem,
        },
        |problem| OfflineError::NotABundle {
            path: path.to_owned(),
            problem,
        },
    )
}

/// Lists a bundle's files without reading the periods: where each lies, and the bytes of
/// its two small listings.
fn list_members(path: &Path) -> Result<BTreeMap<String, Member>, OfflineError> {
    let (tampered, not_a_bundle) = refusals(path);
    let file = File::open(path).map_err(io_at(path))?;
    let mut archive = tar::Archive::new(file);
    let mut members = BTreeMap::new();
    for entry in archive
        .entries_with_seek()
        .map_err(|e| not_a_bundle(e.to_string()))?
    {
        let mut entry = entry.map_err(|e| not_a_bundle(e.to_string()))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(tampered("it holds something other than plain files".into()));
        }
        let name = entry
            .path()
            .map_err(|e| not_a_bundle(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let size = entry.size();
        let listing = if LISTINGS.contains(&name.as_str()) {
            if size > MAX_LISTING_BYTES {
                return Err(tampered(format!("{name} is {size} bytes")));
            }
            let mut bytes = Vec::new();
            entry
                .by_ref()
                .take(MAX_LISTING_BYTES)
                .read_to_end(&mut bytes)
                .map_err(|e| not_a_bundle(e.to_string()))?;
            Some(bytes)
        } else {
            if size > MAX_PERIOD_BYTES {
                return Err(tampered(format!(
                    "{name} is {size} bytes; a period is at most {MAX_PERIOD_BYTES}"
                )));
            }
            None
        };
        let member = Member {
            offset: entry.raw_file_position(),
            size,
            listing,
        };
        if members.insert(name.clone(), member).is_some() {
            return Err(tampered(format!("{name} appears twice")));
        }
    }
    Ok(members)
}

/// A member's bytes, read from the bundle where they lie.
fn open_range(path: &Path, member: &Member) -> Result<FileRange, OfflineError> {
    let file = File::open(path).map_err(io_at(path))?;
    let end = file.metadata().map_err(io_at(path))?.len();
    if member.offset.saturating_add(member.size) > end {
        return Err(OfflineError::Tampered {
            path: path.to_owned(),
            problem: "it ends inside a file it holds (truncated?)".into(),
        });
    }
    Ok(FileRange::new(file, member.offset, member.size))
}

/// Writes `bytes` to `path` so that a reader sees the old file or the whole new one, never
/// a part.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// Writes a file at `path` with `fill` so that a reader sees the old file or the whole new
/// one, never a part: fill a temporary file beside it, flush it to disk, rename it into
/// place.
pub(crate) fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the destination is not a file path",
        ));
    };
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder)?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let mut file = File::create(&tmp)?;
        fill(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // Best effort: a stale temporary file is harmless but untidy.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_folder(folder)
}

/// Makes a rename in `folder` durable; folders cannot be opened for sync everywhere.
fn sync_folder(folder: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(folder)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = folder;
    Ok(())
}

/// Verifies that `bundle` is signed by its hierarchy's connection point, with a certificate
/// from the CA of `trust` valid at `now`: a bundle anyone rewrote, checksums and all, does
/// not verify.
pub fn verify_signature(
    bundle: &Bundle,
    trust: &hrs_pki::Trust,
    now: time::OffsetDateTime,
) -> Result<(), OfflineError> {
    let Some(signed) = &bundle.signature else {
        return Err(OfflineError::BundleUnsigned(bundle.path.clone()));
    };
    let point = hrs_pki::Identity::ConnectionPoint {
        hierarchy: bundle.manifest.hierarchy_hash.clone(),
    };
    trust
        .verify_signer(&bundle.sums, signed, &point, now)
        .map_err(|e| OfflineError::BadSignature {
            path: bundle.path.clone(),
            problem: format!("{SIGNATURE}: {e}"),
        })
}
