//! The hierarchy's own PKI. `hrs pki init` makes a CA once per hierarchy; `hrs pki issue`
//! makes a certificate and key for each site and role, signed by it. A site's certificate
//! names the site (`urn:hrs:site:P01` and common name `P01`), so the aggregator takes a
//! site's identity from the certificate it connected with, never from a message. Roles'
//! certificates name the role and the host names they serve under.
//!
//! Certificates from an enterprise CA work too: a site certificate then needs the site code
//! as its common name or as a `urn:hrs:site:` URI; see [`identity`].

use std::path::{Path, PathBuf};

use hrs_core::SiteCode;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// File names inside a PKI folder.
const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
/// The URI prefixes that carry an identity in a certificate's subject alternative names.
const SITE_URI: &str = "urn:hrs:site:";
const ROLE_URI: &str = "urn:hrs:role:";

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

/// Who a certificate is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A site's agent.
    Site(SiteCode),
    /// A server role.
    Role(Role),
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Site(site) => write!(f, "site {site}"),
            Self::Role(role) => f.write_str(role.as_str()),
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
/// renewed).
pub fn issue(
    dir: &Path,
    identity: &Identity,
    hosts: &[String],
    days: u32,
    now: OffsetDateTime,
) -> Result<Issued, PkiError> {
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

    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "HRS");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let file_name = match identity {
        Identity::Site(site) => {
            params
                .distinguished_name
                .push(DnType::CommonName, site.as_str());
            params
                .subject_alt_names
                .push(uri(&format!("{SITE_URI}{site}"))?);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            format!("site-{site}")
        }
        Identity::Role(role) => {
            params
                .distinguished_name
                .push(DnType::CommonName, role.as_str());
            params
                .subject_alt_names
                .push(uri(&format!("{ROLE_URI}{}", role.as_str()))?);
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
            role.as_str().to_owned()
        }
    };
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

/// Returns who a certificate (DER) is for: the `urn:hrs:` URI in its subject alternative
/// names, else a site code as its common name (certificates from an enterprise CA).
pub fn identity(der: &[u8]) -> Result<Identity, PkiError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| cert_error("reading a peer certificate", e))?;
    if let Ok(Some(names)) = cert.subject_alternative_name() {
        for name in &names.value.general_names {
            if let GeneralName::URI(text) = name {
                if let Some(site) = text.strip_prefix(SITE_URI) {
                    return site
                        .parse()
                        .map(Identity::Site)
                        .map_err(|e| PkiError::NoIdentity(format!("{text}: {e}")));
                }
                if let Some(role) = text.strip_prefix(ROLE_URI) {
                    return role
                        .parse()
                        .map(Identity::Role)
                        .map_err(PkiError::NoIdentity);
                }
            }
        }
    }
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default();
    common_name
        .parse()
        .map(Identity::Site)
        .map_err(|_| PkiError::NoIdentity(format!("subject {}", cert.subject())))
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
}
