//! The one-way hash applied to identifying values before they may leave a site.
//!
//! SHA-256, Base64-encoded. A value that parses as a GUID is hashed as its 16 bytes in .NET
//! `Guid.ToByteArray()` order (first three fields little-endian); any other string as its
//! UTF-16LE bytes. This matches the system HRS is modelled on, so hashes stay comparable.
//!
//! A plain hash of a value from a small set (site codes, table names) can be reversed by
//! guessing. A hierarchy can therefore choose the keyed mode, [`Hasher::Keyed`]:
//! HMAC-SHA-256 over the same bytes with a secret key shared by its sites, so the hashes
//! still correlate within the hierarchy but cannot be guessed outside it.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

/// The shortest key the keyed mode accepts, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// Why a hash key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum HashKeyError {
    /// The key file could not be read.
    #[error("cannot read hash key file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not hold a Base64 key of at least [`MIN_KEY_BYTES`] bytes.
    #[error(
        "hash key file {0} must hold one Base64 line of at least 32 random bytes (make one with `hrs hash --new-key FILE`)"
    )]
    Invalid(String),
}

/// A per-hierarchy secret for the keyed mode; never printed.
#[derive(Clone)]
pub struct HashKey(Vec<u8>);

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashKey({})", self.id())
    }
}

impl HashKey {
    /// Reads a key file: one line of Base64.
    pub fn load(path: &Path) -> Result<Self, HashKeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| HashKeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_base64(text.trim())
            .ok_or_else(|| HashKeyError::Invalid(path.display().to_string()))
    }

    /// Decodes a Base64 key, refusing one shorter than [`MIN_KEY_BYTES`].
    pub fn from_base64(text: &str) -> Option<Self> {
        STANDARD
            .decode(text)
            .ok()
            .filter(|k| k.len() >= MIN_KEY_BYTES)
            .map(Self)
    }

    /// The key as the one Base64 line a key file holds.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.0)
    }

    /// Makes a new random key of [`MIN_KEY_BYTES`] bytes.
    pub fn generate() -> Self {
        use rand::RngCore as _;
        let mut key = vec![0u8; MIN_KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// A short public fingerprint, so sites and the aggregator can check they share a key
    /// without revealing it: the first 8 bytes of SHA-256 over a domain tag and the key.
    pub fn id(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"hrs hash key id\0")
            .chain_update(&self.0)
            .finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// How identifying values are hashed: the plain documented hash, or keyed.
#[derive(Debug, Clone, Default)]
pub enum Hasher {
    /// SHA-256, as the system HRS is modelled on does it.
    #[default]
    Plain,
    /// HMAC-SHA-256 with the hierarchy's key.
    Keyed(HashKey),
}

impl Hasher {
    /// Loads the keyed mode from a key file, or the plain mode when there is none.
    pub fn from_key_file(path: Option<&Path>) -> Result<Self, HashKeyError> {
        path.map_or(Ok(Self::Plain), |p| HashKey::load(p).map(Self::Keyed))
    }

    /// Hashes `value`, treating it as a GUID when it parses as one.
    pub fn hash(&self, value: &str) -> String {
        let bytes = value_bytes(value);
        match self {
            Self::Plain => STANDARD.encode(Sha256::digest(&bytes)),
            Self::Keyed(key) => {
                // HMAC takes keys of any length, so this cannot fail.
                let mut mac = <Hmac<Sha256>>::new_from_slice(&key.0)
                    .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
                mac.update(&bytes);
                STANDARD.encode(mac.finalize().into_bytes())
            }
        }
    }

    /// The key's fingerprint, or empty in the plain mode; runs carry it.
    pub fn key_id(&self) -> String {
        match self {
            Self::Plain => String::new(),
            Self::Keyed(key) => key.id(),
        }
    }
}

/// The bytes a value is hashed as: a GUID's 16 bytes in .NET order, else UTF-16LE.
fn value_bytes(value: &str) -> Vec<u8> {
    match uuid::Uuid::parse_str(value.trim_matches(|c| c == '{' || c == '}')) {
        Ok(guid) => guid.to_bytes_le().to_vec(),
        Err(_) => value.encode_utf16().flat_map(u16::to_le_bytes).collect(),
    }
}

/// Returns the plain hash of `value`, treating it as a GUID when it parses as one.
pub fn hash_value(value: &str) -> String {
    Hasher::Plain.hash(value)
}

/// Returns true when `text` has the form of a hash this module makes (a SHA-256 or
/// HMAC-SHA-256 digest in standard base64), so receivers can refuse clear text sent in a
/// column the catalog hashes.
pub fn is_hash(text: &str) -> bool {
    text.len() == 44 && STANDARD.decode(text).is_ok_and(|bytes| bytes.len() == 32)
}

/// Returns the plain hash of a GUID's 16 bytes in .NET order.
pub fn hash_guid(guid: uuid::Uuid) -> String {
    STANDARD.encode(Sha256::digest(guid.to_bytes_le()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors computed independently: Python's hashlib over uuid.bytes_le / str.encode("utf-16-le").
    #[test]
    fn guid_vector() {
        assert_eq!(
            hash_value("6f9619ff-8b86-d011-b42d-00c04fc964ff"),
            "CtF2iT7GRD8Xr/NmLQeqZFD1BxxY+nnhHMJ4bLJpq7g="
        );
        assert_eq!(
            hash_value("{6F9619FF-8B86-D011-B42D-00C04FC964FF}"),
            "CtF2iT7GRD8Xr/NmLQeqZFD1BxxY+nnhHMJ4bLJpq7g="
        );
    }

    #[test]
    fn string_vectors() {
        assert_eq!(
            hash_value("P01"),
            "47AG/CYcCTPQymhu9woxbYC62T9E1hTQhqtCltDFfEo="
        );
        assert_eq!(
            hash_value("Ünïcode ✓"),
            "qWOQOvVSuC24++QhxWn7ScjXp5D/KMzE+hs6+0KqPz0="
        );
    }

    // Vectors computed independently: Python's hmac.new(key, bytes, hashlib.sha256).
    #[test]
    fn keyed_vectors() {
        let key =
            HashKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("key");
        let keyed = Hasher::Keyed(key.clone());
        assert_eq!(
            keyed.hash("P01"),
            "0vIo+QRy70/jkGUGLZJ/rtHTyACSrtAoC2M7Zpg5lvQ="
        );
        assert_eq!(
            keyed.hash("6f9619ff-8b86-d011-b42d-00c04fc964ff"),
            "Ehgr4zm472JlFPwwnNGexeDrX729iIH5Po6Vrp26/eI="
        );
        assert_eq!(Hasher::Plain.hash("P01"), hash_value("P01"));
        assert_ne!(keyed.hash("P01"), hash_value("P01"));
        assert_eq!(key.id().len(), 16);
        assert!(!format!("{key:?}").contains("AAECAw"));
    }

    #[test]
    fn short_or_garbled_keys_are_refused() {
        assert!(HashKey::from_base64("c2hvcnQ=").is_none());
        assert!(HashKey::from_base64("not base64!").is_none());
        let fresh = HashKey::generate();
        let again = HashKey::from_base64(&fresh.to_base64()).expect("round trip");
        assert_eq!(fresh.id(), again.id());
    }
}
