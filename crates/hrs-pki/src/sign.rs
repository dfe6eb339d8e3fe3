//! Signatures with the hierarchy's PKI: what a role writes for another to act on later
//! (a connection point's bundles, the intake's acknowledgements and update manifests) is
//! signed with the key of the role's own certificate, and travels with that certificate.
//! A reader checks the certificate against the CA it already trusts, the identity it
//! names against the role expected, and the signature against the certificate: a
//! checksum anyone can recompute proves nothing, a signature only its key can make.
//!
//! Signatures are what `openssl dgst -sha256 -sign` writes (ECDSA as DER for the keys
//! `hrs pki` issues), so an operator can check one with standard tools.

use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use base64::Engine as _;
use rcgen::{KeyPair, PublicKeyData as _, SigningKey as _};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;
use x509_parser::time::ASN1Time;

use crate::{Identity, PkiError, cert_error, read};

/// The OID of Ed25519 public keys (RFC 8410).
const ED25519_KEY: &str = "1.3.101.112";

/// Why a signature was not accepted; each says what is wrong with what was read.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// Nothing is signed where a signature is required.
    #[error("it is not signed")]
    Unsigned,
    /// The signer's certificate does not read.
    #[error("the signer's certificate does not read: {0}")]
    Certificate(String),
    /// The signer's certificate was not issued by the CA trusted.
    #[error("the signer's certificate ({subject}) was not issued by the CA in {ca}")]
    Untrusted {
        /// The certificate's subject.
        subject: String,
        /// The CA file trusted.
        ca: PathBuf,
    },
    /// The signer's certificate, or its CA, is not valid at the time of reading.
    #[error(
        "the signer's certificate ({subject}) is not valid now: valid {not_before} to {not_after}"
    )]
    Expired {
        /// The certificate's subject.
        subject: String,
        /// The start of its validity.
        not_before: String,
        /// The end of its validity.
        not_after: String,
    },
    /// The signer's certificate may not sign (its key usage says so).
    #[error("the signer's certificate ({0}) is not for signatures")]
    NotForSigning(String),
    /// The signer's key is of a kind HRS does not verify.
    #[error("the signer's key is of a kind not verified here: {0}")]
    UnsupportedKey(String),
    /// The signature does not match what it is said to sign: it was edited since it was
    /// signed, or signed by another key.
    #[error("the signature does not match: it was changed after it was signed")]
    Mismatch,
    /// The signature is good, but its signer is not the role that signs this.
    #[error("it is signed by {signer}, not by {expected}")]
    WrongSigner {
        /// Who signed it.
        signer: String,
        /// Who should have.
        expected: String,
    },
}

/// A signature and the certificate (DER) to check it with, as they travel together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The signature (DER for ECDSA).
    pub signature: Vec<u8>,
    /// The signer's certificate (DER).
    pub certificate: Vec<u8>,
}

/// A role's key and certificate, loaded once, to sign what it hands on.
pub struct Signer {
    key: KeyPair,
    certificate: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads the certificate `cert` (PEM) and its key `key` (PEM), refusing a key that is
    /// not the certificate's: what it signs would then verify against nothing.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, PkiError> {
        let certificate = pem_to_der(&read(cert)?)
            .ok_or_else(|| cert_error(format!("reading {}", cert.display()), "no certificate"))?;
        let key_pair = KeyPair::from_pem(&read(key)?)
            .map_err(|e| cert_error(format!("reading {}", key.display()), e))?;
        let (_, parsed) = X509Certificate::from_der(&certificate)
            .map_err(|e| cert_error(format!("reading {}", cert.display()), e))?;
        if parsed.public_key().raw != key_pair.subject_public_key_info().as_slice() {
            return Err(cert_error(
                format!("reading {}", key.display()),
                format!("it is not the key of {}", cert.display()),
            ));
        }
        Ok(Self {
            key: key_pair,
            certificate,
        })
    }

    /// Signs `bytes`, returning the signature with the certificate to check it with.
    pub fn sign(&self, bytes: &[u8]) -> Result<Signed, PkiError> {
        let signature = self.key.sign(bytes).map_err(|e| cert_error("signing", e))?;
        Ok(Signed {
            signature,
            certificate: self.certificate.clone(),
        })
    }

    /// The identity its certificate names, so a role can refuse to sign under another's.
    pub fn identity(&self) -> Result<Identity, PkiError> {
        crate::identity(&self.certificate)
    }

    /// The certificate (PEM), to write beside a signature.
    pub fn certificate_pem(&self) -> String {
        der_to_pem(&self.certificate)
    }
}

/// The CA certificates a reader trusts signers' certificates from.
#[derive(Debug, Clone)]
pub struct Trust {
    /// Each certificate of the CA file (DER).
    cas: Vec<Vec<u8>>,
    /// The CA file, so refusals can name it.
    path: PathBuf,
}

impl Trust {
    /// Loads every certificate of the PEM file `ca`.
    pub fn load(ca: &Path) -> Result<Self, PkiError> {
        let text = read(ca)?;
        let mut cas = Vec::new();
        let mut rest = text.as_bytes();
        while let Ok((left, pem)) = x509_parser::pem::parse_x509_pem(rest) {
            if pem.label == "CERTIFICATE" {
                cas.push(pem.contents);
            }
            if left.len() == rest.len() {
                break;
            }
            rest = left;
        }
        if cas.is_empty() {
            return Err(cert_error(
                format!("reading {}", ca.display()),
                "it holds no certificate",
            ));
        }
        Ok(Self {
            cas,
            path: ca.to_owned(),
        })
    }

    /// The CA file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Verifies that `signed` signs `bytes`, by a certificate this CA issued that is valid
    /// at `now`, and returns the identity that certificate names.
    pub fn verify(
        &self,
        bytes: &[u8],
        signed: &Signed,
        now: OffsetDateTime,
    ) -> Result<Identity, SignatureError> {
        let (_, leaf) = X509Certificate::from_der(&signed.certificate)
            .map_err(|e| SignatureError::Certificate(e.to_string()))?;
        let subject = leaf.subject().to_string();
        let at = ASN1Time::from_timestamp(now.unix_timestamp())
            .map_err(|e| SignatureError::Certificate(e.to_string()))?;
        let issuer = self
            .cas
            .iter()
            .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, ca)| ca))
            .find(|ca| {
                ca.subject() == leaf.issuer()
                    && leaf.verify_signature(Some(ca.public_key())).is_ok()
            })
            .ok_or_else(|| SignatureError::Untrusted {
                subject: subject.clone(),
                ca: self.path.clone(),
            })?;
        for cert in [&leaf, &issuer] {
            let validity = cert.validity();
            if !validity.is_valid_at(at) {
                return Err(SignatureError::Expired {
                    subject: cert.subject().to_string(),
                    not_before: validity.not_before.to_string(),
                    not_after: validity.not_after.to_string(),
                });
            }
        }
        if let Ok(Some(usage)) = leaf.key_usage()
            && !usage.value.digital_signature()
        {
            return Err(SignatureError::NotForSigning(subject));
        }
        let key = leaf.public_key();
        let algorithm: &'static dyn VerificationAlgorithm = match key.parsed() {
            Ok(PublicKey::EC(point)) if point.key_size() == 256 => {
                &signature::ECDSA_P256_SHA256_ASN1
            }
            Ok(PublicKey::EC(point)) if point.key_size() == 384 => {
                &signature::ECDSA_P384_SHA384_ASN1
            }
            Ok(PublicKey::RSA(_)) => &signature::RSA_PKCS1_2048_8192_SHA256,
            _ if key.algorithm.algorithm.to_id_string() == ED25519_KEY => &signature::ED25519,
            _ => {
                return Err(SignatureError::UnsupportedKey(
                    key.algorithm.algorithm.to_id_string(),
                ));
            }
        };
        UnparsedPublicKey::new(algorithm, &key.subject_public_key.data)
            .verify(bytes, &signed.signature)
            .map_err(|_| SignatureError::Mismatch)?;
        crate::identity(&signed.certificate).map_err(|e| SignatureError::Certificate(e.to_string()))
    }

    /// Verifies as [`Self::verify`] does, and that the signer is `expected`.
    pub fn verify_signer(
        &self,
        bytes: &[u8],
        signed: &Signed,
        expected: &Identity,
        now: OffsetDateTime,
    ) -> Result<(), SignatureError> {
        let signer = self.verify(bytes, signed, now)?;
        if signer != *expected {
            return Err(SignatureError::WrongSigner {
                signer: signer.to_string(),
                expected: expected.to_string(),
            });
        }
        Ok(())
    }
}

/// The first certificate of a PEM text, as DER.
pub fn pem_to_der(text: &str) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes()).ok()?;
    (pem.label == "CERTIFICATE").then_some(pem.contents)
}

/// A certificate (DER) as PEM, as `openssl` reads it.
pub fn der_to_pem(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str("-----END CERTIFICATE-----\n");
    text
}
