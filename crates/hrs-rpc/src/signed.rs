//! What the intake signs, byte for byte, so that the intake signing and a connection point
//! verifying (online, or from a receipt carried back on removable media) agree on it: an
//! acknowledgement names the hierarchy, period and digest it acknowledges as well as the
//! answer, so it can be attached to nothing else; a manifest is signed as its encoding
//! without its signature.

use hrs_pki::{Identity, Role, SignatureError, Signed, Trust};
use hrs_proto::v1 as pb;
use prost::Message as _;
use time::OffsetDateTime;

/// The tag that opens an acknowledgement's signed bytes: nothing else the intake signs
/// reads as one.
const ACKNOWLEDGEMENT: &str = "hrs-acknowledgement/1";

/// The tag that opens a manifest's signed bytes.
const MANIFEST: &str = "hrs-manifest/1";

/// The bytes the intake signs to acknowledge `period` at `digest` of `hierarchy_hash`:
/// each field prefixed by its length, so no two acknowledgements read the same.
pub fn acknowledgement_bytes(
    hierarchy_hash: &str,
    period: &str,
    digest: &str,
    submission_id: &str,
    accepted_at: &str,
) -> Vec<u8> {
    let mut bytes = Vec::new();
    for field in [
        ACKNOWLEDGEMENT,
        hierarchy_hash,
        period,
        digest,
        submission_id,
        accepted_at,
    ] {
        bytes.extend_from_slice(format!("{}:", field.len()).as_bytes());
        bytes.extend_from_slice(field.as_bytes());
        bytes.push(b'\n');
    }
    bytes
}

/// The bytes the intake signs for `manifest`: its encoding with no signature.
pub fn manifest_bytes(manifest: &pb::UpdateManifest) -> Vec<u8> {
    let unsigned = pb::UpdateManifest {
        signature: None,
        ..manifest.clone()
    };
    let mut bytes = format!("{}:{MANIFEST}\n", MANIFEST.len()).into_bytes();
    bytes.extend(unsigned.encode_to_vec());
    bytes
}

/// A signature as it travels on the wire.
pub fn to_wire(signed: Signed) -> pb::Signature {
    pb::Signature {
        signature: signed.signature,
        certificate: signed.certificate,
    }
}

/// A signature as it came off the wire; none when it is absent or empty.
pub fn from_wire(signature: Option<&pb::Signature>) -> Option<Signed> {
    signature
        .filter(|s| !s.signature.is_empty())
        .map(|s| Signed {
            signature: s.signature.clone(),
            certificate: s.certificate.clone(),
        })
}

/// Verifies that the intake, by a certificate of `trust`, signed `manifest`.
pub fn verify_manifest(
    trust: &Trust,
    manifest: &pb::UpdateManifest,
    now: OffsetDateTime,
) -> Result<(), SignatureError> {
    let signed = from_wire(manifest.signature.as_ref()).ok_or(SignatureError::Unsigned)?;
    trust.verify_signer(
        &manifest_bytes(manifest),
        &signed,
        &Identity::Role(Role::Intake),
        now,
    )
}

/// Verifies that the intake, by a certificate of `trust`, signed `signed` over the
/// acknowledgement `bytes` (see [`acknowledgement_bytes`]).
pub fn verify_acknowledgement(
    trust: &Trust,
    bytes: &[u8],
    signed: Option<&Signed>,
    now: OffsetDateTime,
) -> Result<(), SignatureError> {
    let signed = signed.ok_or(SignatureError::Unsigned)?;
    trust.verify_signer(bytes, signed, &Identity::Role(Role::Intake), now)
}
