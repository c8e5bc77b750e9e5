//! The bottle's egress CA and the leaf certificates egress shows the agent.
//!
//! bottle writes the CA as one PEM: a SEC1 `EC PRIVATE KEY` (what pipelock needs) and the
//! certificate. rcgen on ring only loads PKCS#8, so the key is converted once at start. Leaves
//! share one P-256 key per process (not the CA's), are valid for a day and are cached per host.

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many hosts' configs are kept; past that the cache starts over.
const CACHE_CAP: usize = 4096;
/// How long a leaf is reused before a fresh one is minted (it is valid for a day).
const LEAF_REUSE: Duration = Duration::from_secs(12 * 3600);

/// The CA and the per-host TLS server configs minted from it.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    leaf_key: KeyPair,
    leaf_signer: Arc<dyn rustls::sign::SigningKey>,
    provider: Arc<CryptoProvider>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    cache: Mutex<HashMap<String, (Instant, Arc<ServerConfig>)>>,
}

impl Authority {
    /// Load the combined PEM (key and certificate in one file).
    pub fn load(path: &Path, provider: Arc<CryptoProvider>) -> Result<Self, String> {
        let at = |m: String| format!("{}: {m}", path.display());
        let pem = std::fs::read(path).map_err(|e| at(format!("cannot read the CA: {e}")))?;
        Self::from_pem(&pem, provider).map_err(at)
    }

    /// Parse the CA from PEM bytes holding its key and certificate.
    pub fn from_pem(pem: &[u8], provider: Arc<CryptoProvider>) -> Result<Self, String> {
        let cert_pem = CertificateDer::pem_slice_iter(pem)
            .next()
            .ok_or("no CERTIFICATE block; give the key and the certificate in one PEM")?
            .map_err(|e| format!("the certificate does not parse: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| format!("no usable private key (EC PRIVATE KEY or PRIVATE KEY): {e}"))?;
        let pkcs8 = match key {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            PrivateKeyDer::Sec1(k) => {
                use p256::pkcs8::EncodePrivateKey;
                p256::SecretKey::from_sec1_der(k.secret_sec1_der())
                    .map_err(|e| format!("the EC key is not a P-256 key: {e}"))?
                    .to_pkcs8_der()
                    .map_err(|e| format!("cannot convert the EC key: {e}"))?
                    .as_bytes()
                    .to_vec()
            }
            _ => return Err("the CA key must be an EC P-256 key".into()),
        };
        let ca_key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8),
            &PKCS_ECDSA_P256_SHA256,
        )
        .map_err(|e| format!("the CA key is not usable: {e}"))?;
        let issuer = Issuer::from_ca_cert_der(&cert_pem, ca_key)
            .map_err(|e| format!("the CA certificate is not usable: {e}"))?;
        if cert_pem.is_empty() {
            return Err("the certificate is empty".into());
        }
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("cannot make a leaf key: {e}"))?;
        let leaf_signer = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                leaf_key.serialize_der(),
            )))
            .map_err(|e| format!("cannot load the leaf key: {e}"))?;
        let ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("cannot make a session ticketer: {e}"))?;
        Ok(Authority {
            issuer,
            ca_der: cert_pem.into_owned(),
            leaf_key,
            leaf_signer,
            provider,
            ticketer,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The TLS config that presents a leaf for `host` (a name or an IP literal).
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, String> {
        let now = Instant::now();
        if let Some((made, cfg)) = self.lock_cache().get(host)
            && now.duration_since(*made) < LEAF_REUSE
        {
            return Ok(cfg.clone());
        }
        let cfg = Arc::new(self.mint(host)?);
        let mut cache = self.lock_cache();
        if cache.len() >= CACHE_CAP {
            cache.clear();
        }
        cache.insert(host.to_owned(), (now, cfg.clone()));
        Ok(cfg)
    }

    fn lock_cache(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<ServerConfig>)>> {
        // A panic while holding the lock leaves a usable map; keep serving.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mint(&self, host: &str) -> Result<ServerConfig, String> {
        let mut params = CertificateParams::new(vec![host.to_owned()])
            .map_err(|e| format!("{host} cannot be a certificate name: {e}"))?;
        params.distinguished_name.push(DnType::CommonName, host);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::hours(24);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let leaf = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(|e| format!("cannot sign a leaf for {host}: {e}"))?;
        let chain = vec![leaf.der().clone(), self.ca_der.clone()];
        let certified = Arc::new(CertifiedKey::new(chain, self.leaf_signer.clone()));
        let mut cfg = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg.ticketer = self.ticketer.clone();
        Ok(cfg)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CA as bottle mints it: SEC1 key first, then the certificate.
    pub(crate) fn sec1_ca() -> (String, String) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).unwrap();
        use p256::pkcs8::DecodePrivateKey;
        let sec1 = p256::SecretKey::from_pkcs8_der(&key.serialize_der())
            .unwrap()
            .to_sec1_pem(Default::default())
            .unwrap();
        (format!("{}{}", *sec1, cert.pem()), cert.pem())
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    #[test]
    fn a_sec1_bundle_loads_and_leaves_carry_the_right_san() {
        let (bundle, _) = sec1_ca();
        assert!(bundle.contains("BEGIN EC PRIVATE KEY"));
        let ca = Authority::from_pem(bundle.as_bytes(), provider()).unwrap();
        for host in ["example.com", "10.1.2.3", "::1"] {
            let cfg = ca.mint(host).unwrap();
            assert_eq!(cfg.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        }
        let leaf = ca.mint("10.1.2.3").unwrap();
        drop(leaf);
        let a = ca.server_config("example.com").unwrap();
        let b = ca.server_config("example.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "cached per host");
    }

    #[test]
    fn bad_bundles_say_what_is_missing() {
        let (bundle, cert_only) = sec1_ca();
        let key_only: String = bundle
            .split_inclusive('\n')
            .take_while(|l| !l.contains("BEGIN CERTIFICATE"))
            .collect();
        for (pem, why) in [
            (cert_only.as_str(), "private key"),
            (key_only.as_str(), "CERTIFICATE"),
            ("garbage", "CERTIFICATE"),
        ] {
            let e = Authority::from_pem(pem.as_bytes(), provider())
                .err()
                .unwrap();
            assert!(e.contains(why), "{e}");
        }
    }
}
