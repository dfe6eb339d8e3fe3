//! The connection tool's offline round trip, for hierarchies with no way out:
//!
//! 1. [`prepare`], on the connection point: every period the intake has not acknowledged
//!    goes into one bundle file on removable media;
//! 2. [`connect`], on any internet-facing machine (no other part of HRS needed): every
//!    bundle in a folder is verified and uploaded, and each hierarchy's update manifest and
//!    packages are downloaded next to a receipt of what the intake acknowledged;
//! 3. [`import`], back on the connection point: the receipt and packages are verified, the
//!    updates imported, and the acknowledged periods marked sent.
//!
//! What a bundle holds and how it is written and checked is in [`crate::bundle`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hrs_core::Period;
use hrs_core::clock::Clock;
use hrs_core::token::Token;
use hrs_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use crate::bundle::{
    BUNDLE_FORMAT, Bundle, BundleManifest, BundlePeriod, find_bundles, hierarchy_dir_name,
    read_bundle_file,
};
use crate::bundle::{Head, Leaving, write_atomic, write_atomic_with};
use crate::intake::{IntakeCallError, IntakeLink};
use crate::outbound::Policy;
use crate::store::{Acknowledged, ImportOutcome, ImportedPackage, OutboxStore as _, SqliteOutbox};
use crate::{ConnectionError, ConnectionPointConfig};

/// The format tag of receipts written by this version.
pub const RECEIPT_FORMAT: &str = "hrs-receipt/3";

/// The receipt `connect` writes per hierarchy.
const RECEIPT: &str = "receipt.json";

/// Why a step of the round trip failed; each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// The connection point's configuration or store is unusable.
    #[error(transparent)]
    Point(#[from] ConnectionError),
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The folder holds no bundle.
    #[error(
        "no HRS bundle (hrs-*.tar) in {0}: is this the folder `hrs connection-tool prepare` wrote to?"
    )]
    NoBundles(PathBuf),
    /// A file is not a bundle this version reads.
    #[error("{path} is not an HRS bundle this version reads: {problem}")]
    NotABundle {
        /// The file.
        path: PathBuf,
        /// Why.
        problem: String,
    },
    /// A bundle was changed after `prepare` wrote it.
    #[error(
        "bundle {path} was altered after it was prepared ({problem}); it is refused: prepare a new bundle on the connection point"
    )]
    Tampered {
        /// The bundle.
        path: PathBuf,
        /// Which check failed.
        problem: String,
    },
    /// A bundle did not read back as it was written: the media is failing or full.
    #[error(
        "{path} does not read back as written ({problem}): check the media (full, failing?) and run prepare again"
    )]
    Unwritten {
        /// The bundle being written.
        path: PathBuf,
        /// What read back wrong.
        problem: String,
    },
    /// The intake could not be reached or refused.
    #[error(
        "{0}: check the intake's address, the network or the proxy (--proxy), then run connect again"
    )]
    Intake(#[from] IntakeCallError),
    /// A bundle names no intake and none was given.
    #[error("bundle {0} names no intake: give --intake URL")]
    NoIntake(PathBuf),
    /// Part of a hierarchy's periods or updates did not go through.
    #[error(
        "hierarchy {hierarchy}: {problems}; what the intake acknowledged is in the receipt: import it, then connect again for the rest"
    )]
    Incomplete {
        /// The hierarchy's hashed ID.
        hierarchy: String,
        /// What went wrong.
        problems: String,
    },
    /// A token would go where it must not.
    #[error("{0}")]
    TokenRefused(String),
    /// The folder holds no downloads.
    #[error(
        "no downloads in {0}: run `hrs connection-tool connect --source <bundles> --updates-dest {0}` first (wrong folder?)"
    )]
    NoDownloads(PathBuf),
    /// The folder holds downloads of other hierarchies only.
    #[error(
        "{dir} holds downloads for {others} but not for this connection point's hierarchy ({expected}): bring the folder `connect` wrote for this hierarchy"
    )]
    OtherHierarchy {
        /// The folder.
        dir: PathBuf,
        /// The hierarchies it does hold.
        others: String,
        /// This hierarchy's hashed ID.
        expected: String,
    },
    /// A bundle carries no signature, and the signatures of its hierarchy are checked.
    #[error(
        "bundle {0} is not signed (it has no SHA256SUMS.sig and signer.pem); it is refused: prepare it on a connection point with its certificate ([tls]), or give --allow-unsigned for a hierarchy without a PKI"
    )]
    BundleUnsigned(PathBuf),
    /// A bundle's signature does not verify: rewritten after it was prepared, or signed by
    /// a certificate other than its hierarchy's connection point's.
    #[error(
        "bundle {path} is refused: its signature does not verify ({problem}); prepare a new bundle on the connection point, and check --ca names the hierarchy's CA"
    )]
    BadSignature {
        /// The bundle.
        path: PathBuf,
        /// Which check failed.
        problem: String,
    },
    /// `connect` was given no CA to check bundles' signatures against.
    #[error(
        "no --ca: give the hierarchy's CA (the ca.pem of `hrs pki`) to check the bundles' signatures, or --allow-unsigned for a hierarchy without a PKI"
    )]
    NoBundleCa,
    /// A CA file to check signatures against does not read.
    #[error("the CA {path} does not read: {problem}")]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// Why.
        problem: String,
    },
    /// Something the intake must have signed is not signed, and this connection point
    /// checks the intake's signatures (it has a CA for it).
    #[error(
        "{path}: {what} is not signed by the intake; nothing was imported: connect again to an intake that signs (one with [tls]), or bring the receipt `connect` wrote"
    )]
    ReceiptUnsigned {
        /// The receipt.
        path: PathBuf,
        /// What is unsigned.
        what: String,
    },
    /// The connection point's certificate cannot sign its bundles.
    #[error("cannot sign with the connection point's certificate ([tls]): {0}")]
    Signer(String),
    /// A receipt or a downloaded package was changed after `connect` wrote it.
    #[error(
        "{path} was altered after `connect` wrote it ({problem}); nothing was imported: run connect again"
    )]
    ReceiptTampered {
        /// The receipt or package.
        path: PathBuf,
        /// Which check failed.
        problem: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OfflineError + '_ {
    move |source| OfflineError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where a step tells its operator what it does: lines for the log and the terminal, and
/// progress for long steps.
pub trait Report: Send + Sync {
    /// One line of what happened.
    fn line(&self, text: &str);
    /// Starts a long step of `total` units (bytes or items).
    fn progress(&self, label: &str, total: u64) -> Box<dyn Progress>;
}

/// A long step's progress.
pub trait Progress: Send {
    /// `done` of the total units are done.
    fn set(&mut self, done: u64);
    /// The step is over.
    fn finish(&mut self);
}

/// A report that says nothing, for callers that only want the outcome.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Report for Silent {
    fn line(&self, _text: &str) {}
    fn progress(&self, _label: &str, _total: u64) -> Box<dyn Progress> {
        Box::new(Silent)
    }
}

impl Progress for Silent {
    fn set(&mut self, _done: u64) {}
    fn finish(&mut self) {}
}

/// What `prepare` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The bundle written; none when every period was already acknowledged.
    pub path: Option<PathBuf>,
    /// The periods it holds.
    pub periods: Vec<Period>,
    /// Where an earlier prepare, cut short, was resumed (bytes into the bundle).
    pub resumed_from: Option<u64>,
}

/// Writes every period the intake has not acknowledged into one bundle in `dest`, as it
/// would leave at the level configured now, and records that it was bundled (it stays
/// unsent until `import` brings the intake's acknowledgement back). Each period is read
/// from the store and written to the media a range at a time, never held whole; an
/// earlier prepare cut short is resumed where its last checkpoint ends.
pub fn prepare(
    config: &ConnectionPointConfig,
    dest: &Path,
    report: &dyn Report,
    clock: &dyn Clock,
) -> Result<Prepared, OfflineError> {
    let store = SqliteOutbox::open_existing_writable(&config.store)
        .map_err(ConnectionError::from)?
        .ok_or_else(|| ConnectionError::NoStore {
            store: config.store.clone(),
            config: config.describe(),
        })?;
    let unsent = store.unsent_blocking().map_err(ConnectionError::from)?;
    if unsent.is_empty() {
        report.line("nothing to prepare: the intake has acknowledged every period");
        return Ok(Prepared {
            path: None,
            periods: Vec::new(),
            resumed_from: None,
        });
    }
    let policy = Policy::of(config);
    let mut leaving = Vec::new();
    let mut progress = report.progress("reading unsent periods", unsent.len() as u64);
    for (i, period) in unsent.iter().enumerate() {
        let reshaped = policy.reshape(store.payload(period));
        progress.set(i as u64 + 1);
        // A period the store cannot give whole is reported and left unsent; it must not
        // keep the others from leaving.
        match reshaped {
            Ok(bytes) => leaving.push(Leaving {
                period: period.period,
                received_digest: period.digest.clone(),
                digest: bytes.digest().to_owned(),
                bytes: Arc::new(bytes),
            }),
            Err(e) => report.line(&format!("{} left out of the bundle: {e}", period.period)),
        }
    }
    progress.finish();
    if leaving.is_empty() {
        return Err(OfflineError::NotABundle {
            path: dest.to_owned(),
            problem: "no unsent period can be read from the store (see the lines above)".into(),
        });
    }
    let now = clock.now();
    let signer = bundle_signer(config)?;
    if signer.is_none() {
        report.line(
            "the connection point has no certificate ([tls]): the bundle is NOT signed, and connect takes it only with --allow-unsigned",
        );
    }
    let head = Head {
        hierarchy_hash: config.hierarchy_id.hashed(),
        created_at: hrs_core::clock::rfc3339(now),
        level: config.level.as_str().to_owned(),
        intake: config.intake.clone(),
        signer,
    };
    let mtime = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let written = crate::bundle::write(dest, head, &leaving, report, mtime)?;
    let bundled: Vec<(Period, String)> = leaving
        .iter()
        .map(|p| (p.period, p.received_digest.clone()))
        .collect();
    let marked = store
        .mark_bundled_blocking(&bundled, &written.path, now)
        .map_err(ConnectionError::from)?;
    for period in &written.manifest.periods {
        report.line(&format!(
            "bundled {} at level {} ({} rows, digest {})",
            period.period, written.manifest.level, period.rows, period.digest
        ));
    }
    report.line(&format!(
        "wrote {} ({} period(s), {} bytes): carry it to an internet-facing machine and run `hrs connection-tool connect`",
        written.path.display(),
        written.manifest.periods.len(),
        written.bytes
    ));
    Ok(Prepared {
        path: Some(written.path),
        periods: marked,
        resumed_from: written.resumed_from,
    })
}

/// The connection point's key and certificate (`[tls]`), which sign its bundles; refused
/// when the certificate names anything but this hierarchy's connection point, as `connect`
/// would refuse what it signs.
fn bundle_signer(
    config: &ConnectionPointConfig,
) -> Result<Option<Arc<hrs_pki::Signer>>, OfflineError> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let signer = hrs_pki::Signer::load(&tls.cert, &tls.key)
        .map_err(|e| OfflineError::Signer(e.to_string()))?;
    let expected = hrs_pki::Identity::ConnectionPoint {
        hierarchy: config.hierarchy_id.hashed(),
    };
    match signer.identity() {
        Ok(identity) if identity == expected => Ok(Some(Arc::new(signer))),
        Ok(identity) => Err(OfflineError::Signer(format!(
            "{} names {identity}, not {expected}: issue it with `hrs pki issue --role connection-point --hierarchy ID`",
            tls.cert.display()
        ))),
        Err(e) => Err(OfflineError::Signer(format!("{}: {e}", tls.cert.display()))),
    }
}

/// How `connect` reaches the intake and what it downloads.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Where manifests, packages and receipts go, one folder per hierarchy.
    pub updates_dest: PathBuf,
    /// Which updates: `latest`, `all`, `hotfixes` or `version=V`.
    pub download: String,
    /// The intake's URL, instead of each bundle's.
    pub intake: Option<String>,
    /// The CA of an `https://` intake's certificate.
    pub intake_ca: Option<PathBuf>,
    /// A hierarchy's token, when the intake asks for one.
    pub token: Option<Token>,
    /// An HTTP proxy to reach the intake through.
    pub proxy: Option<hrs_rpc::proxy::Proxy>,
    /// The hierarchy's CA, which each bundle's signature is checked against.
    pub ca: Option<PathBuf>,
    /// Take bundles that carry no signature (a hierarchy without a PKI), saying so; a
    /// signed bundle is still checked when `ca` is given.
    pub allow_unsigned: bool,
}

/// What `connect` did for one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    /// The hierarchy's hashed ID.
    pub hierarchy_hash: String,
    /// Periods the intake acknowledged.
    pub acknowledged: Vec<String>,
    /// Updates downloaded.
    pub updates: Vec<String>,
    /// The receipt written.
    pub receipt: PathBuf,
    /// What went wrong (periods not acknowledged, updates not downloaded); empty when
    /// everything went through.
    pub problems: Vec<String>,
}

/// What `connect` did.
#[derive(Debug, Default)]
pub struct ConnectSummary {
    /// Hierarchies done.
    pub connected: Vec<Connected>,
    /// Bundles or hierarchies that failed, and why.
    pub failed: Vec<(PathBuf, OfflineError)>,
}

/// The receipt `connect` writes per hierarchy: what the intake acknowledged and what was
/// downloaded, for `import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Always [`RECEIPT_FORMAT`].
    pub format: String,
    /// Version of the tool that wrote it.
    pub tool_version: String,
    /// The hierarchy's hashed ID.
    pub hierarchy_hash: String,
    /// RFC 3339 time of the connection.
    pub connected_at: String,
    /// The intake's URL.
    pub intake: String,
    /// The bundles uploaded.
    pub bundles: Vec<String>,
    /// What the intake acknowledged.
    pub submissions: Vec<ReceiptSubmission>,
    /// The update manifest it answered, unless the update check did not complete.
    pub manifest: Option<ManifestJson>,
    /// The intake's signature over the manifest, when it signs.
    pub manifest_signature: Option<ReceiptSignature>,
    /// The packages downloaded, relative to the receipt's folder.
    pub packages: Vec<ReceiptPackage>,
    /// Hex SHA-256 of the receipt as written with this field empty: an edit that did not
    /// also rewrite it is found, and `import` then imports nothing.
    pub sha256: String,
}

impl Receipt {
    /// The checksum of this receipt's content (every field but the checksum itself).
    pub(crate) fn checksum(&self) -> String {
        let unsigned = Self {
            sha256: String::new(),
            ..self.clone()
        };
        // A plain struct of strings and lists always serializes.
        crate::bundle::sha256_hex(&serde_json::to_vec(&unsigned).unwrap_or_default())
    }
}

/// One acknowledged period in a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptSubmission {
    /// The period.
    pub period: String,
    /// Digest as sent.
    pub digest: String,
    /// Digest as the connection point received it.
    pub received_digest: String,
    /// The intake's identifier.
    pub submission_id: String,
    /// RFC 3339 time the intake first accepted it.
    pub accepted_at: String,
    /// The intake had it already.
    pub duplicate: bool,
    /// The intake's signature over this acknowledgement (hierarchy, period, digest,
    /// submission and time), when it signs: what `import` acts on.
    pub signature: Option<ReceiptSignature>,
}

/// A signature of the intake as a receipt carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptSignature {
    /// The signature, lowercase hex (DER for ECDSA).
    pub signature: String,
    /// The intake's certificate (PEM) it verifies against.
    pub certificate: String,
}

impl ReceiptSignature {
    /// A signature off the wire, for a receipt.
    fn of(signed: hrs_pki::Signed) -> Self {
        Self {
            signature: crate::bundle::hex_of(&signed.signature),
            certificate: hrs_pki::sign::der_to_pem(&signed.certificate),
        }
    }

    /// The signature to verify; none when it does not read, which then fails as unsigned
    /// would not: it is refused as altered.
    fn signed(&self) -> Option<hrs_pki::Signed> {
        Some(hrs_pki::Signed {
            signature: unhex(&self.signature)?,
            certificate: hrs_pki::sign::pem_to_der(&self.certificate)?,
        })
    }
}

/// Bytes of lowercase hex.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One downloaded package in a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptPackage {
    /// The update it belongs to.
    pub update_id: String,
    /// File name.
    pub name: String,
    /// Path relative to the receipt's folder.
    pub file: String,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// An update manifest as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestJson {
    /// The hierarchy's hashed ID.
    pub hierarchy_hash: String,
    /// RFC 3339 time the intake decided it.
    pub generated_at: String,
    /// The site versions it was decided from.
    pub site_versions: Vec<String>,
    /// The updates that apply.
    pub updates: Vec<UpdateJson>,
}

/// An update as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateJson {
    /// Identifier.
    pub id: String,
    /// Version sites reach.
    pub version: String,
    /// `update` or `hotfix`.
    pub kind: String,
    /// Title.
    pub title: String,
    /// Release date.
    pub released: String,
    /// Its files.
    pub packages: Vec<PackageJson>,
}

/// A package as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageJson {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

impl From<&pb::UpdateManifest> for ManifestJson {
    fn from(m: &pb::UpdateManifest) -> Self {
        Self {
            hierarchy_hash: m.hierarchy_hash.clone(),
            generated_at: m.generated_at.clone(),
            site_versions: m.site_versions.clone(),
            updates: m
                .updates
                .iter()
                .map(|u| UpdateJson {
                    id: u.id.clone(),
                    version: u.version.clone(),
                    kind: u.kind.clone(),
                    title: u.title.clone(),
                    released: u.released.clone(),
                    packages: u
                        .packages
                        .iter()
                        .map(|p| PackageJson {
                            name: p.name.clone(),
                            size: p.size,
                            sha256: p.sha256.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl From<&ManifestJson> for pb::UpdateManifest {
    fn from(m: &ManifestJson) -> Self {
        Self {
            hierarchy_hash: m.hierarchy_hash.clone(),
            generated_at: m.generated_at.clone(),
            site_versions: m.site_versions.clone(),
            updates: m
                .updates
                .iter()
                .map(|u| pb::Update {
                    id: u.id.clone(),
                    version: u.version.clone(),
                    kind: u.kind.clone(),
                    title: u.title.clone(),
                    released: u.released.clone(),
                    packages: u
                        .packages
                        .iter()
                        .map(|p| pb::Package {
                            name: p.name.clone(),
                            size: p.size,
                            sha256: p.sha256.clone(),
                        })
                        .collect(),
                })
                .collect(),
            // The receipt keeps the signature beside the manifest.
            signature: None,
        }
    }
}

/// A package name safe to use as a file name: no folders, nothing hidden.
fn safe_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0']) && name != ".."
}

/// Uploads every bundle in `source` to the intake and downloads each hierarchy's update
/// manifest and packages into `options.updates_dest/<hierarchy>/`, with a receipt of what
/// the intake acknowledged. A bundle that does not verify is refused whole and the others
/// go on; the summary lists both.
pub async fn connect(
    source: &Path,
    options: &ConnectOptions,
    report: &dyn Report,
    clock: &dyn Clock,
) -> Result<ConnectSummary, OfflineError> {
    if options.token.is_some() {
        // A bundle's intake URL is whatever the media says: a token goes only to an intake
        // named by the operator, and only encrypted.
        match &options.intake {
            Some(url) if url.starts_with("https://") => {}
            Some(url) => {
                return Err(OfflineError::TokenRefused(format!(
                    "--token-file needs an https:// intake; {url} would carry the token in clear"
                )));
            }
            None => {
                return Err(OfflineError::TokenRefused(
                    "--token-file needs --intake: a token goes only to an intake named on the command line, never to the one a bundle names".into(),
                ));
            }
        }
    }
    let paths = find_bundles(source)?;
    let trust = match &options.ca {
        Some(ca) => Some(hrs_pki::Trust::load(ca).map_err(|e| OfflineError::BadCa {
            path: ca.clone(),
            problem: e.to_string(),
        })?),
        None if options.allow_unsigned => None,
        None => return Err(OfflineError::NoBundleCa),
    };
    let mut summary = ConnectSummary::default();
    let mut by_hierarchy: BTreeMap<String, Vec<Bundle>> = BTreeMap::new();
    for path in paths {
        let verified = read_bundle_file(&path)
            .and_then(|bundle| signed_as_required(bundle, trust.as_ref(), options, report, clock));
        match verified {
            Ok(bundle) => {
                report.line(&format!(
                    "verified {} ({} period(s) of hierarchy {})",
                    path.display(),
                    bundle.periods.len(),
                    bundle.manifest.hierarchy_hash
                ));
                by_hierarchy
                    .entry(bundle.manifest.hierarchy_hash.clone())
                    .or_default()
                    .push(bundle);
            }
            Err(e) => {
                report.line(&format!("refused: {e}"));
                summary.failed.push((path, e));
            }
        }
    }
    for (hierarchy_hash, bundles) in by_hierarchy {
        let first = bundles[0].path.clone();
        match connect_hierarchy(&hierarchy_hash, &bundles, options, report, clock).await {
            Ok(connected) => {
                if !connected.problems.is_empty() {
                    summary.failed.push((
                        first.clone(),
                        OfflineError::Incomplete {
                            hierarchy: hierarchy_hash.clone(),
                            problems: connected.problems.join("; "),
                        },
                    ));
                }
                summary.connected.push(connected);
            }
            Err(e) => {
                report.line(&format!("hierarchy {hierarchy_hash}: {e}"));
                summary.failed.push((first, e));
            }
        }
    }
    Ok(summary)
}

/// Checks `bundle`'s signature against `trust`, before anything of it is uploaded; takes
/// an unsigned one only when `allow_unsigned` says so, and says it was not checked.
fn signed_as_required(
    bundle: Bundle,
    trust: Option<&hrs_pki::Trust>,
    options: &ConnectOptions,
    report: &dyn Report,
    clock: &dyn Clock,
) -> Result<Bundle, OfflineError> {
    match (trust, &bundle.signature) {
        (Some(trust), Some(_)) => {
            crate::bundle::verify_signature(&bundle, trust, clock.now())?;
            report.line(&format!(
                "{}: signed by the connection point of hierarchy {} (CA {})",
                bundle.path.display(),
                bundle.manifest.hierarchy_hash,
                trust.path().display()
            ));
        }
        (_, None) if options.allow_unsigned => report.line(&format!(
            "{}: NOT signed, taken on its checksums only (--allow-unsigned)",
            bundle.path.display()
        )),
        (_, None) => return Err(OfflineError::BundleUnsigned(bundle.path.clone())),
        (None, Some(_)) => report.line(&format!(
            "{}: signed, but NOT checked: no --ca given (--allow-unsigned)",
            bundle.path.display()
        )),
    }
    Ok(bundle)
}

async fn connect_hierarchy(
    hierarchy_hash: &str,
    bundles: &[Bundle],
    options: &ConnectOptions,
    report: &dyn Report,
    clock: &dyn Clock,
) -> Result<Connected, OfflineError> {
    let url = options
        .intake
        .clone()
        .or_else(|| bundles.iter().find_map(|b| b.manifest.intake.clone()))
        .ok_or_else(|| OfflineError::NoIntake(bundles[0].path.clone()))?;
    let tls = url
        .starts_with("https://")
        .then(|| options.intake_ca.clone())
        .flatten()
        .map(|ca| hrs_rpc::tls::ClientTls { ca, identity: None });
    let link = IntakeLink {
        url: url.clone(),
        tls,
        token: options.token.clone(),
        proxy: options.proxy.clone(),
    };
    let mut session = link.connect().await?;
    let dir = options
        .updates_dest
        .join(hierarchy_dir_name(hierarchy_hash));
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;

    // Periods already acknowledged by an earlier connect stay in the receipt.
    let mut submissions: BTreeMap<(String, String), ReceiptSubmission> = read_receipt(&dir)
        .ok()
        .flatten()
        .filter(|r| r.hierarchy_hash == hierarchy_hash)
        .map(|r| {
            r.submissions
                .into_iter()
                .map(|s| ((s.period.clone(), s.digest.clone()), s))
                .collect()
        })
        .unwrap_or_default();
    let total = bundles.iter().map(|b| b.periods.len() as u64).sum();
    let mut progress = report.progress("uploading periods", total);
    let mut done = 0;
    let mut acknowledged = Vec::new();
    // What went wrong; what was acknowledged before or after still goes into the receipt.
    let mut problems = Vec::new();
    'bundles: for bundle in bundles {
        for (entry, bytes) in bundle.manifest.periods.iter().zip(&bundle.periods) {
            // The same resumable chunks the online path sends: a connect cut short goes
            // on, the next time, where the intake's held bytes end.
            let offer = pb::PeriodOffer {
                hierarchy_hash: bundle.manifest.hierarchy_hash.clone(),
                period: entry.period.clone(),
                digest: entry.digest.clone(),
                ..Default::default()
            };
            let source: Arc<dyn hrs_core::bytes::RunBytes> = bytes.clone();
            let answer = match session.submit_chunks(offer, source).await {
                Ok(answer) => answer,
                Err(e) => {
                    let transient = e.is_transient();
                    report.line(&format!("{}: not acknowledged: {e}", entry.period));
                    problems.push(format!("{}: {e}", entry.period));
                    if transient {
                        break 'bundles;
                    }
                    continue;
                }
            };
            done += 1;
            progress.set(done);
            acknowledged.push(entry.period.clone());
            submissions.insert(
                (entry.period.clone(), entry.digest.clone()),
                ReceiptSubmission {
                    period: entry.period.clone(),
                    digest: entry.digest.clone(),
                    received_digest: entry.received_digest.clone(),
                    submission_id: answer.submission_id,
                    accepted_at: answer.accepted_at,
                    duplicate: answer.duplicate,
                    signature: hrs_rpc::signed::from_wire(answer.signature.as_ref())
                        .map(ReceiptSignature::of),
                },
            );
        }
    }
    progress.finish();
    for period in &acknowledged {
        report.line(&format!("uploaded {period}: acknowledged by the intake"));
    }

    let (manifest, packages) = if problems.is_empty() {
        match download_updates(&mut session, hierarchy_hash, &dir, options, report).await {
            Ok((manifest, packages)) => (Some(manifest), packages),
            Err(e) => {
                report.line(&format!("updates not downloaded: {e}"));
                problems.push(format!("updates: {e}"));
                (None, Vec::new())
            }
        }
    } else {
        (None, Vec::new())
    };
    let updates: Vec<String> = manifest
        .iter()
        .flat_map(|m| &m.updates)
        .map(|u| u.id.clone())
        .collect();
    if manifest.is_some() {
        report.line(&format!(
            "hierarchy {hierarchy_hash}: {} update(s) apply{}",
            updates.len(),
            if updates.is_empty() {
                String::new()
            } else {
                format!(" ({}), downloaded", updates.join(", "))
            }
        ));
    }
    let mut receipt = Receipt {
        format: RECEIPT_FORMAT.to_owned(),
        tool_version: hrs_core::VERSION.to_owned(),
        hierarchy_hash: hierarchy_hash.to_owned(),
        connected_at: clock.stamp(),
        intake: url,
        bundles: bundles
            .iter()
            .filter_map(|b| b.path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect(),
        submissions: submissions.into_values().collect(),
        manifest: manifest.as_ref().map(ManifestJson::from),
        manifest_signature: manifest
            .as_ref()
            .and_then(|m| hrs_rpc::signed::from_wire(m.signature.as_ref()))
            .map(ReceiptSignature::of),
        packages,
        sha256: String::new(),
    };
    receipt.sha256 = receipt.checksum();
    let path = dir.join(RECEIPT);
    let mut bytes = serde_json::to_vec_pretty(&receipt).map_err(|e| OfflineError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    bytes.push(b'\n');
    write_atomic(&path, &bytes).map_err(io(&path))?;
    report.line(&format!(
        "wrote {}: bring {} back to the connection point and run `hrs connection-tool import`",
        path.display(),
        options.updates_dest.display()
    ));
    Ok(Connected {
        hierarchy_hash: hierarchy_hash.to_owned(),
        acknowledged,
        updates,
        receipt: path,
        problems,
    })
}

/// Asks which updates apply and downloads their packages into `dir/packages/`.
async fn download_updates(
    session: &mut crate::intake::IntakeSession,
    hierarchy_hash: &str,
    dir: &Path,
    options: &ConnectOptions,
    report: &dyn Report,
) -> Result<(pb::UpdateManifest, Vec<ReceiptPackage>), OfflineError> {
    let manifest = session
        .check_updates(hierarchy_hash, &options.download)
        .await?;
    let mut packages = Vec::new();
    let bytes = manifest
        .updates
        .iter()
        .flat_map(|u| &u.packages)
        .fold(0u64, |sum, p| sum.saturating_add(p.size));
    let mut progress = report.progress("downloading updates", bytes);
    let mut downloaded = 0u64;
    for update in &manifest.updates {
        if !safe_name(&update.id) {
            return Err(OfflineError::ReceiptTampered {
                path: dir.to_owned(),
                problem: format!("the intake named an update {:?}", update.id),
            });
        }
        let folder = dir.join("packages").join(&update.id);
        std::fs::create_dir_all(&folder).map_err(io(&folder))?;
        for package in &update.packages {
            if !safe_name(&package.name) {
                return Err(OfflineError::ReceiptTampered {
                    path: folder.clone(),
                    problem: format!("the intake named a package {:?}", package.name),
                });
            }
            let dest = folder.join(&package.name);
            let before = downloaded;
            session
                .download(hierarchy_hash, update, package, &dest, |received| {
                    progress.set(before.saturating_add(received));
                })
                .await?;
            downloaded = downloaded.saturating_add(package.size);
            packages.push(ReceiptPackage {
                update_id: update.id.clone(),
                name: package.name.clone(),
                file: format!("packages/{}/{}", update.id, package.name),
                sha256: package.sha256.clone(),
                size: package.size,
            });
        }
    }
    progress.finish();
    Ok((manifest, packages))
}

fn read_receipt(dir: &Path) -> Result<Option<Receipt>, OfflineError> {
    let path = dir.join(RECEIPT);
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let receipt: Receipt = match serde_json::from_slice(&bytes) {
        Ok(receipt) => receipt,
        Err(e) => {
            // A receipt of an earlier version says so in its format field.
            let format = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("format")?.as_str().map(str::to_owned));
            let problem = match format {
                Some(format) if format != RECEIPT_FORMAT => {
                    format!("format {format:?}; this version reads {RECEIPT_FORMAT:?}")
                }
                _ => format!("it does not read: {e}"),
            };
            return Err(OfflineError::ReceiptTampered { path, problem });
        }
    };
    if receipt.sha256 != receipt.checksum() {
        return Err(OfflineError::ReceiptTampered {
            path,
            problem: "its content does not match its sha256".into(),
        });
    }
    if receipt.format != RECEIPT_FORMAT {
        return Err(OfflineError::ReceiptTampered {
            path,
            problem: format!(
                "format {:?}; this version reads {RECEIPT_FORMAT:?}",
                receipt.format
            ),
        });
    }
    Ok(Some(receipt))
}

/// Returns a file's lowercase hex SHA-256 and size, read a block at a time, telling
/// `read` how far it got.
fn sha256_of_file(path: &Path, mut read: impl FnMut(u64)) -> Result<(String, u64), OfflineError> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
        read(size);
    }
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((sha256, size))
}

/// Verifies that the intake signed every acknowledgement and the manifest of `receipt`,
/// with a certificate from the CA this connection point trusts for the intake: the
/// receipt's own checksum anyone can recompute, the intake's signatures only the intake
/// can make. A connection point without a PKI has nothing to check them with: it says so.
fn verify_intake_signatures(
    config: &ConnectionPointConfig,
    receipt: &Receipt,
    path: &Path,
    report: &dyn Report,
    clock: &dyn Clock,
) -> Result<(), OfflineError> {
    let Some(ca) = config.intake_signature_ca() else {
        report.line(
            "this connection point has no CA for the intake (no [tls], no intake_ca): the receipt is NOT checked for the intake's signatures, only its checksum",
        );
        return Ok(());
    };
    let trust = hrs_pki::Trust::load(ca).map_err(|e| OfflineError::BadCa {
        path: ca.to_owned(),
        problem: e.to_string(),
    })?;
    let now = clock.now();
    let tampered = |problem: String| OfflineError::ReceiptTampered {
        path: path.to_owned(),
        problem,
    };
    let readable = |signature: &ReceiptSignature, what: &str| {
        signature
            .signed()
            .ok_or_else(|| tampered(format!("the signature of {what} does not read")))
    };
    for submission in &receipt.submissions {
        let what = format!("the acknowledgement of {}", submission.period);
        let signature =
            submission
                .signature
                .as_ref()
                .ok_or_else(|| OfflineError::ReceiptUnsigned {
                    path: path.to_owned(),
                    what: what.clone(),
                })?;
        let bytes = hrs_rpc::signed::acknowledgement_bytes(
            &receipt.hierarchy_hash,
            &submission.period,
            &submission.digest,
            &submission.submission_id,
            &submission.accepted_at,
        );
        let signed = readable(signature, &what)?;
        hrs_rpc::signed::verify_acknowledgement(&trust, &bytes, Some(&signed), now)
            .map_err(|e| tampered(format!("{what}: its signature: {e}")))?;
    }
    if let Some(manifest) = &receipt.manifest {
        let what = "the update manifest";
        let signature =
            receipt
                .manifest_signature
                .as_ref()
                .ok_or_else(|| OfflineError::ReceiptUnsigned {
                    path: path.to_owned(),
                    what: what.into(),
                })?;
        let signed = pb::UpdateManifest {
            signature: Some(hrs_rpc::signed::to_wire(readable(signature, what)?)),
            ..pb::UpdateManifest::from(manifest)
        };
        hrs_rpc::signed::verify_manifest(&trust, &signed, now)
            .map_err(|e| tampered(format!("{what}: its signature: {e}")))?;
    }
    report.line(&format!(
        "the receipt's {} acknowledgement(s){} are signed by the intake (CA {})",
        receipt.submissions.len(),
        if receipt.manifest.is_some() {
            " and manifest"
        } else {
            ""
        },
        ca.display()
    ));
    Ok(())
}

/// What `import` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// What changed in the connection point's store.
    pub outcome: ImportOutcome,
    /// The update packages now held, where they were put.
    pub packages: Vec<ImportedPackage>,
    /// The updates the manifest lists.
    pub updates: Vec<String>,
}

/// Verifies what `connect` downloaded for this connection point's hierarchy into `source`
/// and imports it: the update packages are copied under `updates/` beside the store, the
/// manifest is kept for `hrs status`, and each acknowledged period is marked sent. Nothing
/// changes unless everything verifies.
pub fn import(
    config: &ConnectionPointConfig,
    source: &Path,
    report: &dyn Report,
    clock: &dyn Clock,
) -> Result<Imported, OfflineError> {
    let expected = config.hierarchy_id.hashed();
    let dir = source.join(hierarchy_dir_name(&expected));
    let Some(receipt) = read_receipt(&dir)? else {
        let others: Vec<String> = std::fs::read_dir(source)
            .map_err(io(source))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(RECEIPT).is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if others.is_empty() {
            return Err(OfflineError::NoDownloads(source.to_owned()));
        }
        return Err(OfflineError::OtherHierarchy {
            dir: source.to_owned(),
            others: others.join(", "),
            expected,
        });
    };
    let receipt_path = dir.join(RECEIPT);
    let tampered = |path: &Path, problem: String| OfflineError::ReceiptTampered {
        path: path.to_owned(),
        problem,
    };
    if receipt.hierarchy_hash != expected {
        return Err(tampered(
            &receipt_path,
            format!(
                "it is for hierarchy {}, in the folder of {expected}",
                receipt.hierarchy_hash
            ),
        ));
    }
    verify_intake_signatures(config, &receipt, &receipt_path, report, clock)?;
    // The receipt lists only periods the intake acknowledged, and the intake takes nothing
    // but ISO weeks: one that is not a period was edited.
    let acknowledged = receipt
        .submissions
        .iter()
        .map(|s| {
            Ok(Acknowledged {
                period: s
                    .period
                    .parse()
                    .map_err(|e| tampered(&receipt_path, format!("it acknowledges {e}")))?,
                received_digest: s.received_digest.clone(),
                submission_id: s.submission_id.clone(),
            })
        })
        .collect::<Result<Vec<_>, OfflineError>>()?;
    // Every package: listed by the manifest, safe to name, and the bytes it says.
    let manifest = receipt.manifest.as_ref().map(pb::UpdateManifest::from);
    if let Some(m) = &manifest
        && m.hierarchy_hash != expected
    {
        return Err(tampered(
            &receipt_path,
            format!("its manifest is for hierarchy {}", m.hierarchy_hash),
        ));
    }
    let mut progress = report.progress(
        "verifying packages",
        receipt
            .packages
            .iter()
            .fold(0u64, |sum, p| sum.saturating_add(p.size)),
    );
    let mut verified = 0u64;
    for package in &receipt.packages {
        let listed = manifest.iter().flat_map(|m| &m.updates).any(|u| {
            u.id == package.update_id
                && u.packages
                    .iter()
                    .any(|p| p.name == package.name && p.sha256 == package.sha256)
        });
        let file = dir.join(&package.file);
        if !listed
            || !safe_name(&package.update_id)
            || !safe_name(&package.name)
            || package.file != format!("packages/{}/{}", package.update_id, package.name)
        {
            return Err(tampered(
                &receipt_path,
                format!("package {} is not what the manifest lists", package.name),
            ));
        }
        let (sha256, size) = sha256_of_file(&file, |read| {
            progress.set(verified.saturating_add(read));
        })?;
        if sha256 != package.sha256 || size != package.size {
            return Err(tampered(&file, "its SHA-256 is not the manifest's".into()));
        }
        verified = verified.saturating_add(package.size);
    }
    progress.finish();

    let store = SqliteOutbox::open_existing_writable(&config.store)
        .map_err(ConnectionError::from)?
        .ok_or_else(|| ConnectionError::NoStore {
            store: config.store.clone(),
            config: config.describe(),
        })?;
    let updates_root = config
        .store
        .parent()
        .unwrap_or(Path::new("."))
        .join("updates");
    let mut imported = Vec::new();
    for package in &receipt.packages {
        let folder = updates_root.join(&package.update_id);
        std::fs::create_dir_all(&folder).map_err(io(&folder))?;
        let to = folder.join(&package.name);
        let from = dir.join(&package.file);
        let mut source = std::fs::File::open(&from).map_err(io(&from))?;
        write_atomic_with(&to, |file| std::io::copy(&mut source, file).map(drop))
            .map_err(io(&to))?;
        imported.push(ImportedPackage {
            update_id: package.update_id.clone(),
            name: package.name.clone(),
            sha256: package.sha256.clone(),
            size: package.size,
            path: to,
        });
    }
    let outcome = store
        .import_blocking(&acknowledged, manifest.as_ref(), &imported, clock.now())
        .map_err(ConnectionError::from)?;
    for period in &outcome.accepted {
        report.line(&format!(
            "{period}: acknowledged by the intake, marked sent"
        ));
    }
    for period in &outcome.stale {
        report.line(&format!(
            "{period}: a newer version arrived since prepare; it stays unsent for the next bundle"
        ));
    }
    for package in &imported {
        report.line(&format!(
            "imported update {} package {} to {}",
            package.update_id,
            package.name,
            package.path.display()
        ));
    }
    Ok(Imported {
        outcome,
        packages: imported,
        updates: manifest
            .iter()
            .flat_map(|m| &m.updates)
            .map(|u| u.id.clone())
            .collect(),
    })
}
