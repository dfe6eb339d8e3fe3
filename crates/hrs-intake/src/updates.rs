//! The update side of the intake: the configured update catalog, which of its updates
//! apply to a hierarchy (decided from the site versions its latest submission reports),
//! and its packages, checked against what was loaded before a byte is served.
//!
//! The catalog is a TOML file checked in full at load: every package must exist, and its
//! size and SHA-256 are taken then, so a manifest never promises a file the intake cannot
//! serve, and a file changed afterwards is refused instead of served.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io::Seek as _;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use hrs_core::bytes::RunBytes;
use hrs_core::clock::rfc3339;
use hrs_core::config::{self, ConfigError};
use hrs_core::encoded::EncodedError;
use hrs_core::encoded_period::for_each_row_of;
use hrs_core::validate::Invalid;
use hrs_proto::v1 as pb;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::warn;

/// The catalog query whose rows list each site's version.
pub const SITE_LIST_QUERY: &str = "B-SITE-LIST";

/// The column of [`SITE_LIST_QUERY`] holding a site's version.
pub const SITE_VERSION_COLUMN: &str = "version";

/// Largest package chunk the intake sends: the contract's bound on `PackageChunk.data`.
pub const PACKAGE_CHUNK_BYTES: usize = 1 << 20;

/// Longest update id, in bytes: ids name folders on the downloading side.
const MAX_ID_BYTES: usize = 64;

/// Numbers a version may have: enough for any product version, few enough to bound input.
const MAX_VERSION_PARTS: usize = 8;

/// Read buffer when hashing a package.
const HASH_BUFFER_BYTES: usize = 64 << 10;

/// Chunks buffered between the reading task and a slow client: bounds memory per download.
const CHUNKS_IN_FLIGHT: usize = 2;

/// A dotted numeric version such as `5.00.9135.1000`, ordered number by number (missing
/// trailing numbers count as 0), and shown as written.
#[derive(Debug, Clone)]
pub struct Version {
    /// The version as written, so manifests echo the catalog's and the sites' spelling.
    text: String,
    /// Its numbers, for ordering.
    parts: Vec<u64>,
}

/// Why a version did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a dotted numeric version like 5.00.9135.1000 (2 to {MAX_VERSION_PARTS} numbers)"
)]
pub struct BadVersion(pub String);

impl FromStr for Version {
    type Err = BadVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadVersion(s.to_owned());
        let text = s.trim();
        let parts = text
            .split('.')
            .map(|part| {
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                part.parse::<u64>().map_err(|_| bad())
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !(2..=MAX_VERSION_PARTS).contains(&parts.len()) {
            return Err(bad());
        }
        Ok(Self {
            text: text.to_owned(),
            parts,
        })
    }
}

impl Version {
    /// Returns the version as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let len = self.parts.len().max(other.parts.len());
        (0..len)
            .map(|i| {
                let a = self.parts.get(i).copied().unwrap_or(0);
                let b = other.parts.get(i).copied().unwrap_or(0);
                a.cmp(&b)
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Version {}

/// What an update is: a release sites move to, or a fix on top of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// A release (`kind = "update"`).
    Update,
    /// A hotfix (`kind = "hotfix"`).
    Hotfix,
}

impl UpdateKind {
    /// Returns the kind as the catalog and the manifest spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Update => "update",
            Self::Hotfix => "hotfix",
        }
    }
}

/// One file of an update, as loaded: where it is and what it must still be when served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    /// The file name without folder: what the manifest lists and a download names.
    pub name: String,
    /// The file on disk.
    pub path: PathBuf,
    /// Its size in bytes at load.
    pub size: u64,
    /// Its SHA-256 at load, lowercase hex.
    pub sha256: String,
}

/// One update of the catalog, checked.
#[derive(Debug, Clone)]
pub struct CatalogUpdate {
    /// Stable identifier, unique in the catalog, e.g. `2026.12`.
    pub id: String,
    /// The version sites are at after installing it; unique in the catalog.
    pub version: Version,
    /// Update or hotfix.
    pub kind: UpdateKind,
    /// Title shown to operators.
    pub title: String,
    /// Release date, `YYYY-MM-DD`.
    pub released: String,
    /// The oldest site version it installs over, when it does not install over any.
    pub min_version: Option<Version>,
    /// Its files, at least one.
    pub packages: Vec<PackageFile>,
}

impl CatalogUpdate {
    /// Returns whether the update applies to a hierarchy whose sites are at `sites`: at
    /// least one site is below its version, and every such site is at or above
    /// `min_version` (when set), since a site below it could not install the update.
    pub fn applies_to(&self, sites: &[Version]) -> bool {
        let mut below = sites.iter().filter(|v| **v < self.version).peekable();
        if below.peek().is_none() {
            return false;
        }
        match &self.min_version {
            Some(min) => below.all(|v| v >= min),
            None => true,
        }
    }

    /// Returns the package called `name`, if the update has one.
    pub fn package(&self, name: &str) -> Option<&PackageFile> {
        self.packages.iter().find(|p| p.name == name)
    }
}

impl From<&CatalogUpdate> for pb::Update {
    fn from(update: &CatalogUpdate) -> Self {
        Self {
            id: update.id.clone(),
            version: update.version.to_string(),
            kind: update.kind.as_str().to_owned(),
            title: update.title.clone(),
            released: update.released.clone(),
            packages: update
                .packages
                .iter()
                .map(|p| pb::Package {
                    name: p.name.clone(),
                    size: p.size,
                    sha256: p.sha256.clone(),
                })
                .collect(),
        }
    }
}

/// Which applicable updates a caller asks for (`CheckUpdatesRequest.download`, the
/// connection tool's `--download`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Download {
    /// `latest` (or empty): the single highest-version applicable update of kind
    /// `update`; hotfixes are asked for with `hotfixes` or `all`.
    Latest,
    /// `all`: every applicable update and hotfix.
    All,
    /// `hotfixes`: every applicable hotfix.
    Hotfixes,
    /// `version=V`: the applicable updates and hotfixes whose version is V (numerically).
    Version(Version),
}

impl FromStr for Download {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |problem: String| Invalid::Field {
            field: "download".into(),
            problem,
        };
        match s.trim() {
            "" | "latest" => Ok(Self::Latest),
            "all" => Ok(Self::All),
            "hotfixes" => Ok(Self::Hotfixes),
            other => match other.strip_prefix("version=") {
                Some(v) => v
                    .parse()
                    .map(Self::Version)
                    .map_err(|e: BadVersion| invalid(e.to_string())),
                None => Err(invalid(format!(
                    "{other:?} is not one of latest, all, hotfixes, version=V"
                ))),
            },
        }
    }
}

/// Why a package could not be served.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The update does not exist, does not apply to the hierarchy, or has no such package.
    #[error("no package {package:?} of update {update:?} applies to hierarchy {hierarchy:?}")]
    NotFound {
        /// The update asked for.
        update: String,
        /// The package asked for.
        package: String,
        /// The asking hierarchy.
        hierarchy: String,
    },
    /// The file is not what the catalog's load found: served, it would not match the
    /// manifest's size and SHA-256.
    #[error(
        "package {package:?} of update {update:?} changed on disk since the update catalog was loaded ({problem}); the intake's operator restores it or restarts the intake"
    )]
    Changed {
        /// The update.
        update: String,
        /// The package.
        package: String,
        /// What differs.
        problem: String,
    },
    /// The file could not be read.
    #[error("package {package:?} of update {update:?}: {source}")]
    Read {
        /// The update.
        update: String,
        /// The package.
        package: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The configured update catalog, loaded and checked; empty when none is configured, so
/// nothing applies.
#[derive(Debug, Clone, Default)]
pub struct UpdateCatalog {
    /// The catalog file, for logs; none for the empty catalog.
    path: Option<PathBuf>,
    /// The updates, lowest version first (versions are unique).
    updates: Vec<CatalogUpdate>,
}

/// The catalog file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    updates: Vec<UpdateEntry>,
}

/// One `[[updates]]` table as written; checked into a [`CatalogUpdate`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateEntry {
    id: String,
    version: String,
    kind: String,
    title: String,
    released: String,
    #[serde(default)]
    min_version: Option<String>,
    packages: Vec<String>,
}

impl UpdateCatalog {
    /// Returns a catalog without updates: what an intake without `update_catalog` serves.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Reads and checks the catalog at `path`, and takes each package's size and SHA-256;
    /// errors name the file and the field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file: CatalogFile = config::load(path)?;
        let mut updates = Vec::with_capacity(file.updates.len());
        let mut ids = HashMap::new();
        let mut versions: BTreeMap<Version, usize> = BTreeMap::new();
        for (i, entry) in file.updates.into_iter().enumerate() {
            let update = check_entry(path, i, entry)?;
            if let Some(first) = ids.insert(update.id.clone(), i) {
                return Err(config::invalid(
                    path,
                    &format!("updates[{i}].id"),
                    format!("{:?} is updates[{first}]'s id already", update.id),
                ));
            }
            if let Some(first) = versions.insert(update.version.clone(), i) {
                return Err(config::invalid(
                    path,
                    &format!("updates[{i}].version"),
                    format!(
                        "{} is updates[{first}]'s version already: a version names one update",
                        update.version
                    ),
                ));
            }
            updates.push(update);
        }
        updates.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(Self {
            path: Some(path.to_owned()),
            updates,
        })
    }

    /// Returns the catalog file, none for the empty catalog.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Returns every update, lowest version first.
    pub fn updates(&self) -> &[CatalogUpdate] {
        &self.updates
    }

    /// Returns the updates `download` selects among those applying to sites at `sites`,
    /// lowest version first.
    pub fn select(&self, sites: &[Version], download: &Download) -> Vec<&CatalogUpdate> {
        let mut applicable = self.updates.iter().filter(|u| u.applies_to(sites));
        match download {
            // The catalog is sorted by version, so the last is the highest.
            Download::Latest => applicable
                .rfind(|u| u.kind == UpdateKind::Update)
                .into_iter()
                .collect(),
            Download::All => applicable.collect(),
            Download::Hotfixes => applicable
                .filter(|u| u.kind == UpdateKind::Hotfix)
                .collect(),
            Download::Version(v) => applicable.filter(|u| u.version == *v).collect(),
        }
    }

    /// Returns the manifest of `hierarchy_hash` decided from the site versions of its
    /// latest submission (none yet: nothing applies), at `now`, unsigned.
    pub fn manifest(
        &self,
        hierarchy_hash: &str,
        sites: &[Version],
        download: &Download,
        now: OffsetDateTime,
    ) -> pb::UpdateManifest {
        pb::UpdateManifest {
            hierarchy_hash: hierarchy_hash.to_owned(),
            generated_at: rfc3339(now),
            site_versions: sites.iter().map(ToString::to_string).collect(),
            updates: self
                .select(sites, download)
                .into_iter()
                .map(pb::Update::from)
                .collect(),
            // The service signs it, with the key it serves under.
            signature: None,
        }
    }

    /// Returns the update `update_id` and its package `name` if that update applies to a
    /// hierarchy whose latest submission reports `sites` (as `all` would list it).
    pub fn package(
        &self,
        sites: &[Version],
        update_id: &str,
        name: &str,
    ) -> Option<(&CatalogUpdate, &PackageFile)> {
        let update = self
            .updates
            .iter()
            .find(|u| u.id == update_id)
            .filter(|u| u.applies_to(sites))?;
        Some((update, update.package(name)?))
    }
}

/// Checks one `[[updates]]` table, naming `updates[i].<field>` in errors, and hashes its
/// packages.
fn check_entry(path: &Path, i: usize, entry: UpdateEntry) -> Result<CatalogUpdate, ConfigError> {
    let field = |name: &str| format!("updates[{i}].{name}");
    let id_ok = !entry.id.is_empty()
        && entry.id.len() <= MAX_ID_BYTES
        && entry
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !entry.id.starts_with('.');
    if !id_ok {
        return Err(config::invalid(
            path,
            &field("id"),
            format!(
                "{:?} must be 1 to {MAX_ID_BYTES} letters, digits, '.', '_' or '-', not starting with '.'",
                entry.id
            ),
        ));
    }
    let version: Version = entry
        .version
        .parse()
        .map_err(|e: BadVersion| config::invalid(path, &field("version"), e))?;
    let kind = match entry.kind.as_str() {
        "update" => UpdateKind::Update,
        "hotfix" => UpdateKind::Hotfix,
        other => {
            return Err(config::invalid(
                path,
                &field("kind"),
                format!("{other:?} must be \"update\" or \"hotfix\""),
            ));
        }
    };
    if entry.title.trim().is_empty() {
        return Err(config::invalid(path, &field("title"), "is empty"));
    }
    check_date(&entry.released)
        .map_err(|problem| config::invalid(path, &field("released"), problem))?;
    let min_version = match entry.min_version {
        None => None,
        Some(text) => {
            let min: Version = text
                .parse()
                .map_err(|e: BadVersion| config::invalid(path, &field("min_version"), e))?;
            if min >= version {
                return Err(config::invalid(
                    path,
                    &field("min_version"),
                    format!("{min} must be below version {version}: no site could install it"),
                ));
            }
            Some(min)
        }
    };
    if entry.packages.is_empty() {
        return Err(config::invalid(
            path,
            &field("packages"),
            "lists no file: an update has at least one package",
        ));
    }
    let mut names = HashSet::new();
    let mut packages = Vec::with_capacity(entry.packages.len());
    for (j, relative) in entry.packages.iter().enumerate() {
        let here = field(&format!("packages[{j}]"));
        let package = load_package(path, relative)
            .map_err(|problem| config::invalid(path, &here, problem))?;
        if !names.insert(package.name.clone()) {
            return Err(config::invalid(
                path,
                &here,
                format!(
                    "another package of this update is called {:?} already: a download names a package by its file name",
                    package.name
                ),
            ));
        }
        packages.push(package);
    }
    Ok(CatalogUpdate {
        id: entry.id,
        version,
        kind,
        title: entry.title,
        released: entry.released,
        min_version,
        packages,
    })
}

/// Checks a `YYYY-MM-DD` date.
fn check_date(text: &str) -> Result<(), String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    if text.len() != 10 || time::Date::parse(text, &format).is_err() {
        return Err(format!("{text:?} is not a date YYYY-MM-DD"));
    }
    Ok(())
}

/// Finds a package in the catalog's folder and takes its size and SHA-256.
fn load_package(catalog: &Path, relative: &str) -> Result<PackageFile, String> {
    let plain = Path::new(relative);
    let name = plain
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned);
    let inside = !relative.is_empty()
        && !relative.contains('\\')
        && plain
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    let Some(name) = name.filter(|_| inside) else {
        return Err(format!(
            "{relative:?} must be a file name or a relative path below the catalog's folder, without \"..\""
        ));
    };
    let path = config::resolve(catalog, plain);
    let (size, sha256) = std::fs::File::open(&path)
        .and_then(|mut file| {
            if !file.metadata()?.is_file() {
                return Err(std::io::Error::other("not a regular file"));
            }
            hash(&mut file)
        })
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(PackageFile {
        name,
        path,
        size,
        sha256,
    })
}

/// Returns the length and SHA-256 (lowercase hex) of what `reader` holds from here on.
fn hash(reader: &mut impl std::io::Read) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; HASH_BUFFER_BYTES];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Returns the distinct site versions a merged period reports, lowest first: the
/// `version` column of every site's [`SITE_LIST_QUERY`] rows. A set that failed, or a
/// value that is not a dotted numeric version, tells nothing and is skipped.
pub fn site_versions(period: &pb::MergedPeriod) -> Vec<Version> {
    let mut versions = SiteVersions::default();
    for set in period.sites.iter().flat_map(|s| &s.results) {
        for row in &set.rows {
            versions.row(set, row);
        }
    }
    versions.into_sorted()
}

/// Returns the site versions of a stored period's encoding as [`site_versions`] does,
/// reading only its [`SITE_LIST_QUERY`] rows, a row at a time: deciding a hierarchy's
/// updates never holds its (possibly huge) latest period. Reads block: run it off the
/// async runtime.
pub fn site_versions_of(source: &dyn RunBytes) -> Result<Vec<Version>, EncodedError> {
    let mut versions = SiteVersions::default();
    for_each_row_of(source, SITE_LIST_QUERY, |_, set, row| {
        versions.row(set, row);
        Ok::<_, EncodedError>(())
    })?;
    Ok(versions.into_sorted())
}

/// The versions gathered so far, one row at a time, so a decoded period and an encoded
/// one are read by the same rules.
#[derive(Default)]
struct SiteVersions(BTreeSet<Version>);

impl SiteVersions {
    /// Takes the version of one row of `set` (its fields; the rows are not needed).
    fn row(&mut self, set: &pb::ResultSet, row: &pb::Row) {
        if set.query_id != SITE_LIST_QUERY || !set.error.is_empty() {
            return;
        }
        let Some(column) = set
            .columns
            .iter()
            .position(|c| c.name == SITE_VERSION_COLUMN)
        else {
            return;
        };
        if let Some(pb::Value {
            kind: Some(pb::value::Kind::Text(text)),
        }) = row.values.get(column)
            && let Ok(version) = text.parse::<Version>()
        {
            self.0.insert(version);
        }
    }

    fn into_sorted(self) -> Vec<Version> {
        self.0.into_iter().collect()
    }
}

impl PackageFile {
    /// Opens the file and checks it is still what the catalog's load found (size, then
    /// SHA-256); returns it positioned at its start. Reads the whole file: run it off the
    /// async runtime.
    pub fn open_verified(&self, update: &str) -> Result<std::fs::File, UpdateError> {
        let changed = |problem: String| UpdateError::Changed {
            update: update.to_owned(),
            package: self.name.clone(),
            problem,
        };
        let read = |source: std::io::Error| UpdateError::Read {
            update: update.to_owned(),
            package: self.name.clone(),
            source,
        };
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(changed("the file is gone".into()));
            }
            Err(e) => return Err(read(e)),
        };
        let len = file.metadata().map_err(read)?.len();
        if len != self.size {
            return Err(changed(format!("{len} bytes, {} were loaded", self.size)));
        }
        let (size, sha256) = hash(&mut file).map_err(read)?;
        if size != self.size || sha256 != self.sha256 {
            return Err(changed(format!(
                "SHA-256 {sha256}, {} was loaded",
                self.sha256
            )));
        }
        file.rewind().map_err(read)?;
        Ok(file)
    }
}

/// Streams a package from `file` (as [`PackageFile::open_verified`] returned it) in chunks
/// of at most `chunk_bytes`, reading as the client takes them.
///
/// The bytes are hashed again as they go, and the last chunk is held back until they match
/// the loaded SHA-256: a file rewritten in place while it is sent ends the stream with an
/// error instead of completing with different bytes.
pub(crate) fn stream_package(
    file: std::fs::File,
    package: PackageFile,
    update: String,
    chunk_bytes: usize,
) -> mpsc::Receiver<Result<pb::PackageChunk, Status>> {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let chunk_bytes = chunk_bytes.clamp(1, PACKAGE_CHUNK_BYTES);
    tokio::spawn(async move {
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut remaining = package.size;
        let mut held: Option<Vec<u8>> = None;
        let outcome: Result<(), String> = async {
            while remaining > 0 {
                let want = usize::try_from(remaining).map_or(chunk_bytes, |r| r.min(chunk_bytes));
                let mut data = vec![0; want];
                file.read_exact(&mut data)
                    .await
                    .map_err(|e| format!("reading: {e}"))?;
                hasher.update(&data);
                remaining -= want as u64;
                if let Some(previous) = held.replace(data)
                    && tx
                        .send(Ok(pb::PackageChunk { data: previous }))
                        .await
                        .is_err()
                {
                    // The client went away: nothing left to do.
                    return Ok(());
                }
            }
            let mut probe = [0u8; 1];
            if file
                .read(&mut probe)
                .await
                .map_err(|e| format!("reading: {e}"))?
                != 0
            {
                return Err("the file grew".into());
            }
            let sha256 = hex(&hasher.finalize_reset());
            if sha256 != package.sha256 {
                return Err(format!("SHA-256 {sha256}, {} was loaded", package.sha256));
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                if let Some(last) = held {
                    let _ = tx.send(Ok(pb::PackageChunk { data: last })).await;
                }
            }
            Err(problem) => {
                let error = UpdateError::Changed {
                    update,
                    package: package.name,
                    problem,
                };
                // After the first chunk the status travels in trailers, which the
                // refusal layer does not see: this is the one place it is logged.
                warn!(error = %error, "package download broken off");
                let _ = tx
                    .send(Err(hrs_rpc::error::status(&crate::IntakeError::Update(
                        error,
                    ))))
                    .await;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        text.parse().expect("version")
    }

    #[test]
    fn versions_order_by_number_and_keep_their_spelling() {
        assert!(v("5.00.9128.1000") < v("5.00.9135.1000"));
        assert!(v("5.00.9128.999") < v("5.00.9128.1000"));
        assert_eq!(v("5.0.9128"), v("5.00.9128.0"));
        assert_eq!(v(" 5.00.9128.1000 ").to_string(), "5.00.9128.1000");
        for bad in [
            "",
            "5",
            "5.",
            "5..1",
            "5.a",
            "-5.1",
            "5.1.1.1.1.1.1.1.1",
            "5.1e3",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn download_filters_parse_and_name_the_field() {
        assert_eq!("".parse::<Download>(), Ok(Download::Latest));
        assert_eq!("latest".parse::<Download>(), Ok(Download::Latest));
        assert_eq!("all".parse::<Download>(), Ok(Download::All));
        assert_eq!("hotfixes".parse::<Download>(), Ok(Download::Hotfixes));
        assert_eq!(
            "version=5.00.9135.1000".parse::<Download>(),
            Ok(Download::Version(v("5.00.9135.1000")))
        );
        for bad in ["everything", "version=", "version=x.y", "Latest"] {
            let err = bad.parse::<Download>().expect_err(bad).to_string();
            assert!(err.starts_with("field download:"), "{bad}: {err}");
        }
    }

    fn update(version: &str, min: Option<&str>) -> CatalogUpdate {
        CatalogUpdate {
            id: version.into(),
            version: v(version),
            kind: UpdateKind::Update,
            title: "t".into(),
            released: "2026-12-01".into(),
            min_version: min.map(v),
            packages: vec![],
        }
    }

    #[test]
    fn an_update_applies_to_sites_below_it_that_can_install_it() {
        let sites = [v("5.00.9122.1018"), v("5.00.9128.1000")];
        assert!(update("5.00.9132.1000", None).applies_to(&sites));
        assert!(update("5.00.9128.1000", None).applies_to(&sites));
        assert!(!update("5.00.9122.1018", None).applies_to(&sites));
        assert!(update("5.00.9132.1000", Some("5.00.9122.1000")).applies_to(&sites));
        assert!(!update("5.00.9132.1000", Some("5.00.9128.1000")).applies_to(&sites));
        // Only sites below the version must meet min_version.
        assert!(update("5.00.9128.1000", Some("5.00.9122.1018")).applies_to(&sites));
        assert!(!update("5.00.9132.1000", None).applies_to(&[]));
    }

    /// Writes `files` and a catalog of `text` into a fresh folder.
    fn catalog(text: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, body) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("folder");
            }
            std::fs::write(path, body).expect("writes package");
        }
        let path = dir.path().join("updates.toml");
        std::fs::write(&path, text).expect("writes catalog");
        (dir, path)
    }

    fn entry(id: &str, version: &str, kind: &str, packages: &str) -> String {
        format!(
            "[[updates]]\nid = \"{id}\"\nversion = \"{version}\"\nkind = \"{kind}\"\ntitle = \"HRS {id}\"\nreleased = \"2026-12-01\"\npackages = [{packages}]\n"
        )
    }

    #[test]
    fn loads_packages_with_size_and_sha256() {
        let (dir, path) = catalog(
            &format!(
                "{}{}",
                entry(
                    "2026.12",
                    "5.00.9135.1000",
                    "update",
                    "\"b.cab\", \"docs/readme.txt\""
                ),
                entry("2026.10", "5.00.9132.1000", "update", "\"a.cab\"")
            ),
            &[
                ("a.cab", "a"),
                ("b.cab", "bb"),
                ("docs/readme.txt", "read me"),
            ],
        );
        let loaded = UpdateCatalog::load(&path).expect("loads");
        assert_eq!(loaded.path(), Some(path.as_path()));
        let ids: Vec<&str> = loaded.updates().iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, ["2026.10", "2026.12"], "lowest version first");
        let readme = loaded.updates()[1].package("readme.txt").expect("by name");
        assert_eq!(readme.path, dir.path().join("docs/readme.txt"));
        assert_eq!(readme.size, 7);
        assert_eq!(readme.sha256, hex(&Sha256::digest(b"read me")));
        assert!(UpdateCatalog::empty().updates().is_empty());
    }

    #[test]
    fn the_sample_catalog_in_deploy_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/updates/updates.toml");
        let loaded = UpdateCatalog::load(&path).expect("the sample loads");
        assert!(!loaded.updates().is_empty());
    }

    #[test]
    fn catalog_errors_name_the_file_and_the_field() {
        let ok = entry("2026.12", "5.00.9135.1000", "update", "\"a.cab\"");
        let files = [("a.cab", "a"), ("b.cab", "b"), ("sub/a.cab", "a")];
        for (text, field) in [
            (
                entry("2026.12", "5.00.9135.1000", "update", "\"missing.cab\""),
                "updates[0].packages[0]",
            ),
            (
                format!(
                    "{ok}{}",
                    entry("2026.12", "5.00.9136.1000", "hotfix", "\"b.cab\"")
                ),
                "updates[1].id",
            ),
            (
                format!(
                    "{ok}{}",
                    entry("2026.13", "5.0.9135.1000", "hotfix", "\"b.cab\"")
                ),
                "updates[1].version",
            ),
            (
                entry("2026.12", "5.00.x.1000", "update", "\"a.cab\""),
                "updates[0].version",
            ),
            (
                entry("2026.12", "5.00.9135.1000", "patch", "\"a.cab\""),
                "updates[0].kind",
            ),
            (
                entry("../up", "5.00.9135.1000", "update", "\"a.cab\""),
                "updates[0].id",
            ),
            (
                entry("2026.12", "5.00.9135.1000", "update", "\"../a.cab\""),
                "updates[0].packages[0]",
            ),
            (
                entry("2026.12", "5.00.9135.1000", "update", "\"/etc/passwd\""),
                "updates[0].packages[0]",
            ),
            (
                entry("2026.12", "5.00.9135.1000", "update", "\"sub\""),
                "updates[0].packages[0]",
            ),
            (
                entry(
                    "2026.12",
                    "5.00.9135.1000",
                    "update",
                    "\"a.cab\", \"sub/a.cab\"",
                ),
                "updates[0].packages[1]",
            ),
            (
                entry("2026.12", "5.00.9135.1000", "update", ""),
                "updates[0].packages",
            ),
            (
                ok.replace("2026-12-01", "2026-13-01"),
                "updates[0].released",
            ),
            (
                ok.replace("title = \"HRS 2026.12\"", "title = \" \""),
                "updates[0].title",
            ),
            (
                format!("{ok}min_version = \"5.00.9135.1000\"\n"),
                "updates[0].min_version",
            ),
            (format!("{ok}size = 3\n"), "size"),
            ("[[updates]]\nid = \"x\"\n".to_owned(), "version"),
        ] {
            let (_dir, path) = catalog(&text, &files);
            let err = UpdateCatalog::load(&path).expect_err(field).to_string();
            assert!(
                err.contains(field) && err.contains(&path.display().to_string()),
                "{field}: {err}"
            );
        }
    }

    /// Collects what a package stream sends: the chunks, then the error that ended it.
    async fn drain(
        mut rx: mpsc::Receiver<Result<pb::PackageChunk, Status>>,
    ) -> (Vec<Vec<u8>>, Option<Status>) {
        let mut chunks = Vec::new();
        while let Some(item) = rx.recv().await {
            match item {
                Ok(chunk) => chunks.push(chunk.data),
                Err(status) => return (chunks, Some(status)),
            }
        }
        (chunks, None)
    }

    #[tokio::test]
    async fn a_package_rewritten_while_sent_ends_in_an_error_before_its_last_chunk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.bin");
        std::fs::write(&path, "abcdefghij").expect("writes");
        let package = load_package(&dir.path().join("updates.toml"), "p.bin").expect("loads");

        let file = package.open_verified("u").expect("unchanged");
        let (chunks, error) = drain(stream_package(file, package.clone(), "u".into(), 4)).await;
        assert_eq!(chunks, [&b"abcd"[..], b"efgh", b"ij"]);
        assert!(error.is_none());

        // Rewritten in place (same file, same size) after the check, before it is read.
        let file = package.open_verified("u").expect("unchanged");
        std::fs::write(&path, "ABCDEFGHIJ").expect("rewrites");
        let (chunks, error) = drain(stream_package(file, package.clone(), "u".into(), 4)).await;
        assert_eq!(
            chunks,
            [&b"ABCD"[..], b"EFGH"],
            "the last chunk is held back"
        );
        let error = error.expect("ends in an error");
        assert_eq!(error.code(), tonic::Code::FailedPrecondition);
        assert!(error.message().contains("p.bin"), "{}", error.message());

        let file = std::fs::File::open(&path).expect("opens");
        std::fs::write(&path, "ABCDEFGHIJK").expect("grows");
        let (_, error) = drain(stream_package(file, package.clone(), "u".into(), 4)).await;
        assert!(error.expect("ends in an error").message().contains("grew"));
        let error = package.open_verified("u").expect_err("changed");
        assert!(matches!(error, UpdateError::Changed { .. }), "{error}");
    }

    #[test]
    fn site_versions_come_from_the_site_list() {
        let set = |query: &str, versions: &[&str], error: &str| pb::ResultSet {
            query_id: query.into(),
            columns: ["site_type", SITE_VERSION_COLUMN]
                .iter()
                .map(|name| pb::Column {
                    name: (*name).into(),
                    r#type: "text".into(),
                })
                .collect(),
            rows: versions
                .iter()
                .map(|v| pb::Row {
                    values: vec![
                        (&hrs_core::Value::Text("Primary".into())).into(),
                        (&hrs_core::Value::Text((*v).into())).into(),
                    ],
                })
                .collect(),
            error: error.into(),
            ..Default::default()
        };
        let period = pb::MergedPeriod {
            sites: vec![
                pb::SiteResults {
                    results: vec![
                        set(SITE_LIST_QUERY, &["5.00.9128.1000", "garbage"], ""),
                        set("B-OTHER", &["1.0"], ""),
                    ],
                    ..Default::default()
                },
                pb::SiteResults {
                    results: vec![set(
                        SITE_LIST_QUERY,
                        &["5.00.9122.1018", "5.0.9128.1000"],
                        "",
                    )],
                    ..Default::default()
                },
                pb::SiteResults {
                    results: vec![set(SITE_LIST_QUERY, &[], "timeout")],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let versions: Vec<String> = site_versions(&period)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(versions, ["5.00.9122.1018", "5.00.9128.1000"]);
        // Read from the encoding a row at a time, by the same rules.
        let encoded: Vec<String> = site_versions_of(&prost::Message::encode_to_vec(&period))
            .expect("reads")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(encoded, versions);
    }
}
