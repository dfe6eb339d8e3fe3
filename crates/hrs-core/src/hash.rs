//! The one-way hash applied to identifying values before they may leave a site.
//!
//! SHA-256, Base64-encoded. A value that parses as a GUID is hashed as its 16 bytes in .NET
//! `Guid.ToByteArray()` order (first three fields little-endian); any other string as its
//! UTF-16LE bytes. This matches the system HRS is modelled on, so hashes stay comparable.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

/// Returns the hash of `value`, treating it as a GUID when it parses as one.
pub fn hash_value(value: &str) -> String {
    match uuid::Uuid::parse_str(value.trim_matches(|c| c == '{' || c == '}')) {
        Ok(guid) => hash_guid(guid),
        Err(_) => hash_text(value),
    }
}

/// Returns the hash of a GUID's 16 bytes in .NET order.
pub fn hash_guid(guid: uuid::Uuid) -> String {
    STANDARD.encode(Sha256::digest(guid.to_bytes_le()))
}

/// Returns the hash of a string's UTF-16LE bytes.
pub fn hash_text(value: &str) -> String {
    let bytes: Vec<u8> = value.encode_utf16().flat_map(u16::to_le_bytes).collect();
    STANDARD.encode(Sha256::digest(bytes))
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
}
