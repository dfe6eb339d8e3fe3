//! The per-hierarchy token a connection point presents to the intake when it cannot hold
//! a client certificate.
//!
//! The token is a bearer secret: whoever holds it may submit that hierarchy's data. The
//! connection point keeps it in an owner-only file and sends it only over TLS; the intake
//! keeps only its SHA-256, so the intake's configuration reveals no token.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

/// Random bytes in a new token.
const TOKEN_BYTES: usize = 32;

/// The shortest token accepted, in characters: 128 bits of Base64.
pub const MIN_TOKEN_CHARS: usize = 22;

/// Why a token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not hold one line of at least [`MIN_TOKEN_CHARS`] visible characters.
    #[error(
        "token file {0} must hold one line of at least 22 visible ASCII characters (the intake's operator makes one with `hrs intake token`)"
    )]
    Invalid(String),
}

/// A hierarchy's intake token; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([redacted])")
    }
}

impl Token {
    /// Makes a new random token.
    pub fn generate() -> Self {
        use rand::RngCore as _;
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Reads a token file: one line.
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(text.trim()).ok_or_else(|| TokenError::Invalid(path.display().to_string()))
    }

    /// Accepts a token of visible ASCII (it travels as an HTTP header value) that is long
    /// enough not to be guessed.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() >= MIN_TOKEN_CHARS && text.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| Self(text.to_owned()))
    }

    /// The token itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the intake keeps of the token: its SHA-256, in lowercase hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.0)
    }
}

/// SHA-256 of a presented token in lowercase hex, compared with the intake's configured
/// fingerprints.
pub fn fingerprint(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_parses_and_is_never_printed() {
        let token = Token::generate();
        assert_eq!(Token::parse(token.expose()), Some(token.clone()));
        assert!(!format!("{token:?}").contains(token.expose()));
        assert_eq!(token.fingerprint().len(), 64);
    }

    #[test]
    fn short_or_invisible_tokens_are_refused() {
        assert!(Token::parse("short").is_none());
        assert!(Token::parse("a token with spaces in it, long enough").is_none());
        assert!(Token::parse("0123456789abcdefghijkl").is_some());
    }

    #[test]
    fn fingerprint_is_sha256_hex() {
        assert_eq!(
            fingerprint("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
