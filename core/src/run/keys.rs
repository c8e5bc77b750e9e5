//! Minting the per-bottle CAs a plan asks for (rcgen), with the formats and modes the sidecars need.
//!
//! Every CA is ECDSA P-256, `IsCA` with path length 0, `keyCertSign` + `cRLSign`. Its key is
//! written as SEC1 `EC PRIVATE KEY` with the named curve, because pipelock's `LoadCA`
//! (Go's `x509.ParseECPrivateKey`) refuses PKCS#8. Modes: keys 0600, certs 0644, a combined
//! cert+key PEM 0644 (the egress daemon reads it as uid 1000 through a bind mount), every dir 0700.

use crate::model::{CaPaths, CaRequest};
use crate::plan::merge::AGENT_CA_BUNDLE_STATE_PATH;
use p256::pkcs8::DecodePrivateKey;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// A minted CA, in memory.
pub struct MintedCa {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The key, SEC1 PEM (`EC PRIVATE KEY`).
    pub key_sec1_pem: String,
}

impl std::fmt::Debug for MintedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedCa")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Why a CA could not be minted or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// rcgen or the key conversion failed.
    #[error("cannot mint CA `{id}`: {detail}")]
    Mint {
        /// The CA id.
        id: String,
        /// What failed.
        detail: String,
    },
    /// Writing a file failed.
    #[error("cannot write {path}: {error}; check the state dir's permissions and free space")]
    Write {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
}

/// Mint one CA for `req`.
pub fn mint(req: &CaRequest) -> Result<MintedCa, KeyError> {
    let err = |detail: String| KeyError::Mint {
        id: req.id.clone(),
        detail,
    };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| err(e.to_string()))?;
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| err(e.to_string()))?;
    params
        .distinguished_name
        .push(DnType::CommonName, req.common_name.clone());
    params
        .distinguished_name
        .push(DnType::OrganizationName, "bottle");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(30);
    let cert = params.self_signed(&key).map_err(|e| err(e.to_string()))?;
    let secret =
        p256::SecretKey::from_pkcs8_der(&key.serialize_der()).map_err(|e| err(e.to_string()))?;
    let der = sec1_der(&secret);
    let key_sec1_pem =
        p256::pkcs8::der::pem::encode_string("EC PRIVATE KEY", p256::pkcs8::LineEnding::LF, &der)
            .map_err(|e| err(e.to_string()))?;
    Ok(MintedCa {
        cert_pem: cert.pem(),
        key_sec1_pem,
    })
}

/// RFC 5915 `ECPrivateKey` DER with the named curve and the public key, as OpenSSL and Go
/// write it. (`elliptic-curve` leaves the curve out, which Go's `ParseECPrivateKey` rejects.)
fn sec1_der(secret: &p256::SecretKey) -> Vec<u8> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    const PRIME256V1: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let point = secret.public_key().to_encoded_point(false);
    let mut der = vec![0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20];
    der.extend_from_slice(&secret.to_bytes());
    der.extend_from_slice(&[0xa0, 0x0a]);
    der.extend_from_slice(&PRIME256V1);
    der.extend_from_slice(&[0xa1, 0x44, 0x03, 0x42, 0x00]);
    der.extend_from_slice(point.as_bytes());
    debug_assert_eq!(der.len(), 0x79);
    der
}

fn write(state_dir: &Path, rel: &str, contents: &str, mode: u32) -> Result<(), KeyError> {
    let path = state_dir.join(rel);
    let werr = |error| KeyError::Write {
        path: path.display().to_string(),
        error,
    };
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(werr)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .map_err(werr)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(werr)?;
    f.write_all(contents.as_bytes()).map_err(werr)
}

/// Mint every CA of a plan into `state_dir` at the paths the plan chose, and write the agent's
/// trust bundle (the certs of every CA `trusted_by_agent`) when there is one.
pub fn mint_all(
    state_dir: &Path,
    requests: &[CaRequest],
    paths: &[CaPaths],
) -> Result<(), KeyError> {
    let mut trusted = String::new();
    for (req, p) in requests.iter().zip(paths) {
        debug_assert_eq!(req.id, p.id);
        let ca = mint(req)?;
        write(state_dir, &p.key, &ca.key_sec1_pem, 0o600)?;
        write(state_dir, &p.cert, &ca.cert_pem, 0o644)?;
        if let Some(combined) = &p.combined {
            write(
                state_dir,
                combined,
                &format!("{}{}", ca.key_sec1_pem, ca.cert_pem),
                0o644,
            )?;
        }
        if req.trusted_by_agent {
            trusted.push_str(&ca.cert_pem);
        }
    }
    if !trusted.is_empty() {
        write(state_dir, AGENT_CA_BUNDLE_STATE_PATH, &trusted, 0o644)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str, combined: bool, trusted: bool) -> CaRequest {
        CaRequest {
            id: id.into(),
            common_name: format!("test {id}"),
            combined_pem: combined,
            trusted_by_agent: trusted,
        }
    }

    #[test]
    fn keys_are_sec1_with_the_named_curve() {
        let ca = mint(&req("pipelock", false, true)).unwrap();
        assert!(
            ca.key_sec1_pem
                .starts_with("-----BEGIN EC PRIVATE KEY-----\n"),
            "{}",
            ca.key_sec1_pem
        );
        assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        // SEC1 with parameters [0] prime256v1 (OID 1.2.840.10045.3.1.7), which Go requires.
        let der = pem_body(&ca.key_sec1_pem);
        let oid = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        assert!(
            der.windows(oid.len()).any(|w| w == oid),
            "the curve OID is in the key"
        );
        assert_eq!(der[0], 0x30);
    }

    fn pem_body(pem: &str) -> Vec<u8> {
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64_decode(&b64)
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
        bytes
            .chunks(4)
            .flat_map(|c| {
                let n = c
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, &v)| n | (u32::from(v) << (18 - 6 * i)));
                let len = c.len() - 1;
                (0..len).map(move |i| (n >> (16 - 8 * i)) as u8)
            })
            .collect()
    }

    #[test]
    fn files_land_with_their_modes_and_the_bundle_has_both_parts() {
        let dir = tempfile::tempdir().unwrap();
        let reqs = [req("pipelock", false, false), req("egress", true, true)];
        let paths: Vec<CaPaths> = reqs.iter().map(crate::plan::planner::ca_paths).collect();
        mint_all(dir.path(), &reqs, &paths).unwrap();
        let mode = |p: &str| {
            std::fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("ca"), 0o700);
        assert_eq!(mode("ca/pipelock"), 0o700);
        assert_eq!(mode("ca/pipelock/key.pem"), 0o600);
        assert_eq!(mode("ca/pipelock/cert.pem"), 0o644);
        assert_eq!(mode("ca/egress/key.pem"), 0o600);
        assert_eq!(mode("ca/egress/bundle.pem"), 0o644);
        assert_eq!(mode("ca/agent-trust.pem"), 0o644);
        let bundle = std::fs::read_to_string(dir.path().join("ca/egress/bundle.pem")).unwrap();
        assert!(bundle.contains("BEGIN EC PRIVATE KEY") && bundle.contains("BEGIN CERTIFICATE"));
        let trust = std::fs::read_to_string(dir.path().join("ca/agent-trust.pem")).unwrap();
        assert_eq!(
            trust,
            std::fs::read_to_string(dir.path().join("ca/egress/cert.pem")).unwrap(),
            "only trusted CAs"
        );
    }
}
