//! The hierarchy's own PKI. `hrs pki init` makes a CA once per hierarchy; `hrs pki issue`
//! makes a certificate and key for each site and role, signed by it. A site's certificate
//! names the site (`urn:hrs:site:P01` and common name `P01`), so the aggregator takes a
//! site's identity from the certificate it connected with, never from a message. Roles'
//! certificates name the role and the host names they serve under; a region aggregator's
//! names its region (`urn:hrs:region:EU`), whose sites the aggregator above configures, and
//! a connection point's names the one hierarchy it submits for
//! (`urn:hrs:role:connection-point:<hashed ID>`).
//!
//! A certificate names exactly one identity: one that could be read as two (two `urn:hrs:`
//! URIs, or a URI and a common name naming another site) is refused, never taken by the
//! first name found. Certificates from an enterprise CA work too: a site certificate then
//! needs the site code as its common name or as a `urn:hrs:site:` URI; see [`identity`].

pub mod sign;

use std::path::{Path, PathBuf};

use hrs_core::SiteCode;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub use sign::{SignatureError, Signed, Signer, Trust};

/// File names inside a PKI folder.
const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
/// The URI prefixes that carry an identity in a certificate's subject alternative names:
/// any URI under [`HRS_URI`] claims one, so a kind this version does not know is refused
/// rather than overlooked.
const HRS_URI: &str = "urn:hrs:";
const SITE_URI: &str = "urn:hrs:site:";
const ROLE_URI: &str = "urn:hrs:role:";
const REGION_URI: &str = "urn:hrs:region:";

/// Longest validity `init` and `issue` grant, in days (a hundred years): beyond it a
/// certificate outlives any deployment, and the date arithmetic would leave its range.
pub const MAX_DAYS: u32 = 36_525;

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The folder already holds a CA, which `init` never replaces.
    #[error("{0} already holds a CA; issue certificates from it, or init another folder")]
    Exists(PathBuf),
    /// A certificate or key could not be made or read.
    #[error("{context}: {reason}")]
    Certificate {
        /// What was being done.
        context: String,
        /// Why it failed.
        reason: String,
    },
    /// A certificate names no identity HRS knows.
    #[error("the certificate names no site or role: {0}")]
    NoIdentity(String),
    /// A certificate names more than one identity, so whoever holds it could act as any.
    #[error("the certificate names more than one identity ({0}); a certificate names exactly one")]
    ManyIdentities(String),
    /// A validity that yields a certificate already expired, or absurdly long.
    #[error("{0}")]
    Validity(String),
    /// An identity that cannot be written into a certificate (a malformed region or
    /// hierarchy).
    #[error("{0}")]
    BadIdentity(String),
}

fn cert_error(context: impl Into<String>, reason: impl ToString) -> PkiError {
    PkiError::Certificate {
        context: context.into(),
        reason: reason.to_string(),
    }
}

/// A role other than a site's agent, each with its own certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The aggregator (also the client of its connection point or upstream aggregator).
    Aggregator,
    /// The connection point (also the client of the intake).
    ConnectionPoint,
    /// The intake.
    Intake,
}

impl Role {
    /// The role's name, as in file names, certificates and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aggregator => "aggregator",
            Self::ConnectionPoint => "connection-point",
            Self::Intake => "intake",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "aggregator" => Ok(Self::Aggregator),
            "connection-point" => Ok(Self::ConnectionPoint),
            "intake" => Ok(Self::Intake),
            other => Err(format!(
                "{other:?} is not a role: aggregator, connection-point or intake"
            )),
        }
    }
}

/// The name of a region aggregator, as its certificate (`urn:hrs:region:NAME`) and the
/// `[[regions]]` of the aggregator above it spell it, so the two can be matched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Region(String);

/// Longest region name, in characters.
const MAX_REGION_CHARS: usize = 32;

impl Region {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Region {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let ok = !text.is_empty()
            && text.len() <= MAX_REGION_CHARS
            && !text.starts_with('-')
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "{text:?} is not a region name: 1 to {MAX_REGION_CHARS} letters, digits or \
                 '-', not starting with '-'"
            ))
        }
    }
}

impl TryFrom<String> for Region {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Returns the hashed hierarchy ID a connection point's certificate names for `text`: a
/// hierarchy's GUID is hashed as the intake sees it, a hashed ID taken as it is.
pub fn hierarchy_hash(text: &str) -> Result<String, PkiError> {
    if let Ok(id) = text.parse::<hrs_core::HierarchyId>() {
        return Ok(id.hashed());
    }
    if is_hashed_id(text) {
        return Ok(text.to_owned());
    }
    Err(PkiError::BadIdentity(format!(
        "{text:?} is neither a hierarchy's GUID nor its hashed ID (44 characters of Base64)"
    )))
}

/// True for a hashed hierarchy ID as HRS writes it: the Base64 of a SHA-256, 44
/// characters ending in `=`.
fn is_hashed_id(text: &str) -> bool {
    text.len() == 44
        && text.ends_with('=')
        && text[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Who a certificate is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A site's agent.
    Site(SiteCode),
    /// A server role serving the whole hierarchy: the top aggregator (the only one that
    /// offers periods to the connection point) or the intake. A connection point's
    /// certificate naming no hierarchy reads as this too; the intake refuses it.
    Role(Role),
    /// A region aggregator: relays only the sites the aggregator above configures beneath
    /// its region.
    Region(Region),
    /// A hierarchy's connection point: the intake takes its submissions for that
    /// hierarchy only.
    ConnectionPoint {
        /// The hashed ID of the hierarchy it submits for, as the intake sees it.
        hierarchy: String,
    },
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Site(site) => write!(f, "site {site}"),
            Self::Role(role) => f.write_str(role.as_str()),
            Self::Region(region) => write!(f, "region aggregator {region}"),
            Self::ConnectionPoint { hierarchy } => {
                write!(f, "connection-point of hierarchy {hierarchy}")
            }
        }
    }
}

impl Identity {
    /// The one URI that names this identity in a certificate.
    fn uri(&self) -> String {
        match self {
            Self::Site(site) => format!("{SITE_URI}{site}"),
            Self::Role(role) => format!("{ROLE_URI}{}", role.as_str()),
            Self::Region(region) => format!("{REGION_URI}{region}"),
            Self::ConnectionPoint { hierarchy } => {
                format!("{ROLE_URI}{}:{hierarchy}", Role::ConnectionPoint.as_str())
            }
        }
    }

    /// Reads the identity a `urn:hrs:` URI names.
    fn from_uri(text: &str) -> Result<Self, PkiError> {
        let unknown = || PkiError::NoIdentity(format!("{text}: not an HRS identity"));
        if let Some(site) = text.strip_prefix(SITE_URI) {
            return site
                .parse()
                .map(Self::Site)
                .map_err(|e| PkiError::NoIdentity(format!("{text}: {e}")));
        }
        if let Some(region) = text.strip_prefix(REGION_URI) {
            return region
                .parse()
                .map(Self::Region)
                .map_err(|e| PkiError::NoIdentity(format!("{text}: {e}")));
        }
        let role = text.strip_prefix(ROLE_URI).ok_or_else(unknown)?;
        match role.split_once(':') {
            None => role
                .parse()
                .map(Self::Role)
                .map_err(|e| PkiError::NoIdentity(format!("{text}: {e}"))),
            Some((role, hierarchy)) if role == Role::ConnectionPoint.as_str() => {
                if is_hashed_id(hierarchy) {
                    Ok(Self::ConnectionPoint {
                        hierarchy: hierarchy.to_owned(),
                    })
                } else {
                    Err(PkiError::NoIdentity(format!(
                        "{text}: the hierarchy is not a hashed hierarchy ID (44 characters of \
                         Base64)"
                    )))
                }
            }
            Some(_) => Err(unknown()),
        }
    }

    /// The file name (without extension) its certificate and key are written under.
    fn file_name(&self) -> String {
        match self {
            Self::Site(site) => format!("site-{site}"),
            Self::Role(role) => role.as_str().to_owned(),
            Self::Region(region) => format!("region-{region}"),
            Self::ConnectionPoint { .. } => Role::ConnectionPoint.as_str().to_owned(),
        }
    }

    /// The common name of its certificate: never another site's code, so the certificate
    /// names one identity only.
    fn common_name(&self) -> String {
        match self {
            Self::Site(site) => site.as_str().to_owned(),
            Self::Role(role) => role.as_str().to_owned(),
            Self::Region(region) => format!("region {region}"),
            Self::ConnectionPoint { .. } => Role::ConnectionPoint.as_str().to_owned(),
        }
    }
}

/// What was written, and until when it is valid.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, readable by its owner only).
    pub key: PathBuf,
    /// The end of its validity.
    pub not_after: OffsetDateTime,
}

/// Creates a hierarchy CA in `dir` (`ca.pem`, and `ca.key` readable by its owner only),
/// valid for `days`; refuses a folder that already holds one.
pub fn init(dir: &Path, name: &str, days: u32, now: OffsetDateTime) -> Result<Issued, PkiError> {
    check_days(days)?;
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    if cert_path.exists() || key_path.exists() {
        return Err(PkiError::Exists(dir.to_owned()));
    }
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "HRS");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let not_after = validity(&mut params, days, now);
    let key = KeyPair::generate().map_err(|e| cert_error("generating the CA key", e))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| cert_error("signing the CA certificate", e))?;
    write_secret(&key_path, key.serialize_pem().as_bytes())?;
    write(&cert_path, cert.pem().as_bytes())?;
    Ok(Issued {
        cert: cert_path,
        key: key_path,
        not_after,
    })
}

/// Issues a certificate for `identity` from the CA in `dir`, valid for `days` from `now`,
/// naming `hosts` (DNS names or IP addresses) for a server role; writes `<name>.pem` and
/// `<name>.key` into `dir`, replacing an earlier pair (that is how a certificate is
/// renewed). Refuses a validity of no days or beyond [`MAX_DAYS`], and a CA expired by
/// `now`: each would write a certificate no peer accepts.
pub fn issue(
    dir: &Path,
    identity: &Identity,
    hosts: &[String],
    days: u32,
    now: OffsetDateTime,
) -> Result<Issued, PkiError> {
    check_days(days)?;
    let ca_expires = not_after(&dir.join(CA_CERT))?;
    if ca_expires <= now {
        return Err(PkiError::Validity(format!(
            "the CA in {} expired on {}: certificates it issues are refused everywhere; make \
             a new CA (`hrs pki init`) and issue every certificate from it",
            dir.display(),
            ca_expires.date()
        )));
    }
    // Valid from an hour ago: clocks differ between machines.
    issue_valid(
        dir,
        identity,
        hosts,
        now - Duration::hours(1),
        now + Duration::days(i64::from(days)),
    )
}

/// Issues a certificate as [`issue`] does, valid from `not_before` to `not_after`.
pub fn issue_valid(
    dir: &Path,
    identity: &Identity,
    hosts: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Issued, PkiError> {
    let ca_cert = read(&dir.join(CA_CERT))?;
    let ca_key = KeyPair::from_pem(&read(&dir.join(CA_KEY))?)
        .map_err(|e| cert_error(format!("reading {}", dir.join(CA_KEY).display()), e))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key)
        .map_err(|e| cert_error(format!("reading {}", dir.join(CA_CERT).display()), e))?;

    if not_after <= not_before {
        return Err(PkiError::Validity(format!(
            "a certificate valid from {not_before} to {not_after} is never valid"
        )));
    }
    check_identity(identity)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "HRS");
    params
        .distinguished_name
        .push(DnType::CommonName, identity.common_name());
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.subject_alt_names.push(uri(&identity.uri())?);
    match identity {
        Identity::Site(_) => {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        Identity::Role(_) | Identity::Region(_) | Identity::ConnectionPoint { .. } => {
            for host in hosts {
                params.subject_alt_names.push(match host.parse() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(
                        host.clone()
                            .try_into()
                            .map_err(|e| cert_error(format!("host {host:?}"), e))?,
                    ),
                });
            }
            // Every role serves, and every role but the intake also calls the next one up.
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        }
    }
    let file_name = identity.file_name();
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate().map_err(|e| cert_error("generating a key", e))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| cert_error(format!("signing the certificate of {identity}"), e))?;
    let (cert_path, key_path) = (
        dir.join(format!("{file_name}.pem")),
        dir.join(format!("{file_name}.key")),
    );
    // A renewal replaces the pair; the key is written owner-only from its first byte.
    let _ = std::fs::remove_file(&key_path);
    write_secret(&key_path, key.serialize_pem().as_bytes())?;
    write(&cert_path, cert.pem().as_bytes())?;
    Ok(Issued {
        cert: cert_path,
        key: key_path,
        not_after,
    })
}

/// Refuses a validity of no days (a certificate expired as it is written) or beyond
/// [`MAX_DAYS`].
fn check_days(days: u32) -> Result<(), PkiError> {
    if days == 0 || days > MAX_DAYS {
        return Err(PkiError::Validity(format!(
            "a certificate valid for {days} day(s): give 1 to {MAX_DAYS} days"
        )));
    }
    Ok(())
}

/// Refuses an identity built in code that a certificate could not name faithfully.
fn check_identity(identity: &Identity) -> Result<(), PkiError> {
    match identity {
        Identity::ConnectionPoint { hierarchy } if !is_hashed_id(hierarchy) => {
            Err(PkiError::BadIdentity(format!(
                "{hierarchy:?} is not a hashed hierarchy ID (44 characters of Base64)"
            )))
        }
        _ => Ok(()),
    }
}

/// Sets a validity starting an hour before `now` (clocks differ) and lasting `days`.
fn validity(params: &mut CertificateParams, days: u32, now: OffsetDateTime) -> OffsetDateTime {
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
    params.not_after
}

fn uri(text: &str) -> Result<SanType, PkiError> {
    Ok(SanType::URI(
        text.to_owned()
            .try_into()
            .map_err(|e| cert_error(format!("URI {text}"), e))?,
    ))
}

/// Returns who a certificate (DER) is for: the one identity its `urn:hrs:` URI names, else
/// a site code as its common name (certificates from an enterprise CA). Refuses a
/// certificate naming more than one: two URIs of different identities, or a URI and a
/// common name that is another site's code.
pub fn identity(der: &[u8]) -> Result<Identity, PkiError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| cert_error("reading a peer certificate", e))?;
    let mut named: Vec<Identity> = Vec::new();
    if let Ok(Some(names)) = cert.subject_alternative_name() {
        for name in &names.value.general_names {
            let GeneralName::URI(text) = name else {
                continue;
            };
            // The scheme and namespace are case-insensitive: `URN:HRS:` claims as much.
            let claims = text
                .get(..HRS_URI.len())
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(HRS_URI));
            if !claims {
                continue;
            }
            let identity = Identity::from_uri(&format!("{HRS_URI}{}", &text[HRS_URI.len()..]))?;
            if !named.contains(&identity) {
                named.push(identity);
            }
        }
    }
    for common_name in cert.subject().iter_common_name() {
        let Some(site) = common_name
            .as_str()
            .ok()
            .and_then(|cn| cn.parse::<SiteCode>().ok())
        else {
            continue;
        };
        let identity = Identity::Site(site);
        if !named.contains(&identity) {
            named.push(identity);
        }
    }
    match named.len() {
        1 => Ok(named.remove(0)),
        0 => Err(PkiError::NoIdentity(format!("subject {}", cert.subject()))),
        _ => Err(PkiError::ManyIdentities(
            named
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// How far ahead an expiring certificate is warned about.
pub const WARN_DAYS: i64 = 30;

/// A certificate's expiry as `hrs status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Expiry {
    /// The certificate file.
    pub file: PathBuf,
    /// When it stops being valid (RFC 3339).
    pub not_after: String,
    /// Whole days left (negative once expired).
    pub days_left: i64,
    /// Set when it expires within [`WARN_DAYS`] or has expired: what to do.
    pub warning: Option<String>,
}

impl Expiry {
    /// Reads a certificate file's expiry as of `now`.
    pub fn of(file: &Path, now: OffsetDateTime) -> Result<Self, PkiError> {
        let not_after = not_after(file)?;
        let days_left = (not_after - now).whole_days();
        let warning = if not_after <= now {
            Some(format!(
                "{} expired on {}: issue a new one (`hrs pki issue`) and restart",
                file.display(),
                not_after.date()
            ))
        } else if days_left < WARN_DAYS {
            Some(format!(
                "{} expires in {days_left} day(s), on {}: renew it with `hrs pki issue`",
                file.display(),
                not_after.date()
            ))
        } else {
            None
        };
        Ok(Self {
            file: file.to_owned(),
            not_after: not_after
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            days_left,
            warning,
        })
    }
}

/// Logs a warning when a role's certificate expires within [`WARN_DAYS`] of `now` or cannot
/// be read; roles call it as they start.
pub fn warn_if_expiring(file: &Path, now: OffsetDateTime) {
    match Expiry::of(file, now) {
        Ok(Expiry {
            warning: Some(warning),
            ..
        }) => tracing::warn!(certificate = %file.display(), "{warning}"),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read the certificate's expiry"),
    }
}

/// Returns when the first certificate in a PEM file stops being valid.
pub fn not_after(pem_file: &Path) -> Result<OffsetDateTime, PkiError> {
    let text = read(pem_file)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map_err(|e| cert_error(format!("reading {}", pem_file.display()), e))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| cert_error(format!("reading {}", pem_file.display()), e))?;
    Ok(cert.validity().not_after.to_datetime())
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    std::fs::write(path, bytes).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    hrs_core::files::write_owner_only(path, bytes).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(pem_file: &Path) -> Vec<u8> {
        let text = std::fs::read_to_string(pem_file).expect("reads");
        let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes()).expect("pem");
        pem.contents
    }

    #[test]
    fn a_site_certificate_names_its_site_and_a_role_its_role() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Any date will do: nothing here is checked against the system's clock.
        let now = time::macros::datetime!(2026-11-30 06:00 UTC);
        let ca = init(dir.path(), "test", 3650, now).expect("init");
        assert!(matches!(
            init(dir.path(), "again", 10, now),
            Err(PkiError::Exists(_))
        ));
        let p01 = issue(
            dir.path(),
            &Identity::Site("P01".parse().expect("site")),
            &[],
            90,
            now,
        )
        .expect("issues");
        assert_eq!(
            identity(&der(&p01.cert)).expect("identity"),
            Identity::Site("P01".parse().expect("site"))
        );
        let aggregator = issue(
            dir.path(),
            &Identity::Role(Role::Aggregator),
            &["localhost".into(), "127.0.0.1".into()],
            30,
            now,
        )
        .expect("issues");
        assert_eq!(
            identity(&der(&aggregator.cert)).expect("identity"),
            Identity::Role(Role::Aggregator)
        );
        let expires = not_after(&p01.cert).expect("expiry");
        assert!(
            Expiry::of(&p01.cert, now)
                .expect("expiry")
                .warning
                .is_none()
        );
        let soon = Expiry::of(&p01.cert, now + Duration::days(70)).expect("expiry");
        assert!(
            soon.warning.as_ref().is_some_and(|w| w.contains("renew")),
            "{soon:?}"
        );
        let late = Expiry::of(&p01.cert, now + Duration::days(100)).expect("expiry");
        assert!(late.warning.is_some_and(|w| w.contains("expired")));
        assert!(expires < ca.not_after);
        assert!(expires > now + Duration::days(89));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for key in [&ca.key, &p01.key] {
                let mode = std::fs::metadata(key).expect("key").permissions().mode();
                assert_eq!(mode & 0o077, 0, "{} is private", key.display());
            }
        }
    }

    /// Signs a certificate naming whatever `uris` and `common_name` say with the CA in
    /// `dir`, as a careless or hostile CA operator might: what `issue` never writes.
    fn crafted(dir: &Path, uris: &[&str], common_name: Option<&str>) -> Vec<u8> {
        let ca_key = KeyPair::from_pem(&read(&dir.join(CA_KEY)).expect("key")).expect("key");
        let issuer =
            Issuer::from_ca_cert_pem(&read(&dir.join(CA_CERT)).expect("ca"), ca_key).expect("ca");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(name) = common_name {
            params.distinguished_name.push(DnType::CommonName, name);
        }
        for text in uris {
            params.subject_alt_names.push(uri(text).expect("uri"));
        }
        let key = KeyPair::generate().expect("key");
        params
            .signed_by(&key, &issuer)
            .expect("signs")
            .der()
            .to_vec()
    }

    #[test]
    fn a_certificate_naming_two_identities_is_refused_whichever_comes_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = time::macros::datetime!(2026-11-30 06:00 UTC);
        init(dir.path(), "test", 30, now).expect("init");
        for (uris, common_name, named) in [
            (
                &["urn:hrs:site:P01", "urn:hrs:role:aggregator"][..],
                Some("P01"),
                "site P01, aggregator",
            ),
            (
                &["urn:hrs:role:aggregator", "urn:hrs:site:P01"],
                None,
                "aggregator, site P01",
            ),
            (
                &["urn:hrs:role:aggregator"],
                Some("P02"),
                "aggregator, site P02",
            ),
            (&["urn:hrs:site:P01"], Some("P02"), "site P01, site P02"),
            (
                &["urn:hrs:site:P01", "URN:HRS:site:P02"],
                None,
                "site P01, site P02",
            ),
            (
                &["urn:hrs:region:EU", "urn:hrs:region:US"],
                None,
                "region aggregator EU, region aggregator US",
            ),
        ] {
            let error =
                identity(&crafted(dir.path(), uris, common_name)).expect_err("two identities");
            assert!(
                matches!(&error, PkiError::ManyIdentities(list) if list == named),
                "{uris:?} {common_name:?}: {error}"
            );
            assert!(error.to_string().contains("exactly one"), "{error}");
        }
        // A kind of `urn:hrs:` identity this version does not know is refused, not skipped.
        let error = identity(&crafted(
            dir.path(),
            &["urn:hrs:site:P01", "urn:hrs:superuser:all"],
            None,
        ))
        .expect_err("unknown kind");
        assert!(
            error.to_string().contains("urn:hrs:superuser:all"),
            "{error}"
        );
        // One identity, however often it is named, and names outside HRS, are one.
        assert_eq!(
            identity(&crafted(
                dir.path(),
                &[
                    "urn:hrs:site:P01",
                    "urn:hrs:site:P01",
                    "https://example.com/"
                ],
                Some("P01"),
            ))
            .expect("one identity"),
            Identity::Site("P01".parse().expect("site"))
        );
        assert_eq!(
            identity(&crafted(dir.path(), &[], Some("P03"))).expect("common name"),
            Identity::Site("P03".parse().expect("site"))
        );
    }

    #[test]
    fn a_region_names_its_region_and_a_connection_point_its_hierarchy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = time::macros::datetime!(2026-11-30 06:00 UTC);
        init(dir.path(), "test", 30, now).expect("init");
        let hosts = ["localhost".to_owned()];
        let region = Identity::Region("EU-1".parse().expect("region"));
        let issued = issue(dir.path(), &region, &hosts, 10, now).expect("issues");
        assert!(issued.cert.ends_with("region-EU-1.pem"), "{issued:?}");
        assert_eq!(identity(&der(&issued.cert)).expect("identity"), region);

        let hierarchy = hierarchy_hash("3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47").expect("a GUID");
        assert_eq!(hierarchy.len(), 44);
        assert_eq!(
            hierarchy_hash(&hierarchy).expect("a hashed ID"),
            hierarchy,
            "a hashed ID is taken as it is"
        );
        for bad in ["not a hierarchy", "nope", &hierarchy[..43]] {
            assert!(hierarchy_hash(bad).is_err(), "{bad:?}");
        }
        let point = Identity::ConnectionPoint {
            hierarchy: hierarchy.clone(),
        };
        let issued = issue(dir.path(), &point, &hosts, 10, now).expect("issues");
        assert!(issued.cert.ends_with("connection-point.pem"), "{issued:?}");
        assert_eq!(identity(&der(&issued.cert)).expect("identity"), point);
        assert!(matches!(
            issue(
                dir.path(),
                &Identity::ConnectionPoint {
                    hierarchy: "a:b".into()
                },
                &hosts,
                10,
                now
            ),
            Err(PkiError::BadIdentity(_))
        ));
        for bad in ["", "-EU", "E U", "a-name-longer-than-thirty-two-chars"] {
            assert!(bad.parse::<Region>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_validity_of_no_days_or_an_absurd_one_or_from_an_expired_ca_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = time::macros::datetime!(2026-11-30 06:00 UTC);
        assert!(matches!(
            init(dir.path(), "test", 0, now),
            Err(PkiError::Validity(_))
        ));
        assert!(!dir.path().join(CA_CERT).exists(), "nothing written");
        init(dir.path(), "test", 30, now).expect("init");
        let site = Identity::Site("P01".parse().expect("site"));
        for days in [0, MAX_DAYS + 1, u32::MAX] {
            let error = issue(dir.path(), &site, &[], days, now).expect_err("refused");
            assert!(
                matches!(&error, PkiError::Validity(m) if m.contains("1 to")),
                "{days}: {error}"
            );
        }
        assert!(!dir.path().join("site-P01.pem").exists(), "nothing written");
        let later = now + Duration::days(31);
        let error = issue(dir.path(), &site, &[], 10, later).expect_err("expired CA");
        assert!(error.to_string().contains("expired"), "{error}");
        assert!(!dir.path().join("site-P01.pem").exists(), "nothing written");
    }

    #[test]
    fn a_signature_verifies_by_its_signer_from_the_trusted_ca_only() {
        let now = time::macros::datetime!(2026-11-30 06:00 UTC);
        let (ours, theirs) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        init(ours.path(), "ours", 30, now).expect("init");
        init(theirs.path(), "theirs", 30, now).expect("init");
        let intake = Identity::Role(Role::Intake);
        let hosts = ["localhost".to_owned()];
        let issued = issue(ours.path(), &intake, &hosts, 10, now).expect("issues");
        let signer = Signer::load(&issued.cert, &issued.key).expect("loads");
        let trust = Trust::load(&ours.path().join(CA_CERT)).expect("trust");
        let signed = signer.sign(b"what the intake says").expect("signs");
        assert_eq!(
            trust
                .verify(b"what the intake says", &signed, now)
                .expect("verifies"),
            intake
        );
        assert!(matches!(
            trust.verify(b"what the intake said", &signed, now),
            Err(SignatureError::Mismatch)
        ));
        assert!(matches!(
            trust.verify(b"what the intake says", &signed, now + Duration::days(11)),
            Err(SignatureError::Expired { .. })
        ));
        let point = Identity::ConnectionPoint {
            hierarchy: hierarchy_hash("3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47").expect("hash"),
        };
        assert!(matches!(
            trust.verify_signer(b"what the intake says", &signed, &point, now),
            Err(SignatureError::WrongSigner { .. })
        ));

        // The same role's certificate from another CA signs nothing this reader trusts.
        let foreign = issue(theirs.path(), &intake, &hosts, 10, now).expect("issues");
        let foreign = Signer::load(&foreign.cert, &foreign.key).expect("loads");
        let signed = foreign.sign(b"what the intake says").expect("signs");
        let error = trust
            .verify(b"what the intake says", &signed, now)
            .expect_err("another CA");
        assert!(matches!(error, SignatureError::Untrusted { .. }), "{error}");

        // A key that is not the certificate's is refused as it loads.
        let other = issue(
            ours.path(),
            &Identity::Site("P01".parse().expect("site")),
            &[],
            10,
            now,
        )
        .expect("issues");
        assert!(Signer::load(&issued.cert, &other.key).is_err());
        assert_eq!(
            sign::pem_to_der(&sign::der_to_pem(&signed.certificate)),
            Some(signed.certificate)
        );
    }
}
