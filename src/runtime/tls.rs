//! TLS for the failover link (RFC 8156 §10 → RFC 7653 §8.2, §9.1; RFC 7525).
//!
//! Mutual authentication: each side presents a certificate chaining to the
//! configured CA; with `peer-name` set, the partner's certificate must also
//! carry that name. One crypto provider (ring) and rustls's default suites:
//! TLS 1.2 and 1.3, ECDHE key exchange and AEAD ciphers only.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, RootCertStore, ServerConfig, SignatureScheme};

/// Both ends of the link's TLS configuration.
pub struct TlsSetup {
    pub client: Arc<ClientConfig>,
    pub server: Arc<ServerConfig>,
    /// The name the primary asks for (SNI); the partner's `peer-name` or a placeholder.
    pub server_name: ServerName<'static>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("failover.tls.{what} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("failover.tls.{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("failover.tls.{what} {}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// Load certificate, key and CA and build both configurations.
/// `load` for relationship `i` of `n`: problems name `failover[i].tls.…`
/// when the server has several relationships.
pub fn load_for(cert: &Path, key: &Path, ca: &Path, peer_name: Option<&str>, i: usize, n: usize) -> Result<TlsSetup, String> {
    load(cert, key, ca, peer_name).map_err(|e| if n > 1 { e.replacen("failover.", &format!("failover[{i}]."), 1) } else { e })
}

pub fn load(cert: &Path, key: &Path, ca: &Path, peer_name: Option<&str>) -> Result<TlsSetup, String> {
    let chain = read_certs(cert, "cert")?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("failover.tls.key {}: {e}", key.display()))?;
    let mut roots = RootCertStore::empty();
    for c in read_certs(ca, "ca")? {
        roots.add(c).map_err(|e| format!("failover.tls.ca {}: {e}", ca.display()))?;
    }
    let roots = Arc::new(roots);
    let peer = match peer_name {
        Some(n) => Some(ServerName::try_from(n.to_string()).map_err(|e| format!("failover.tls.peer-name {n:?}: {e}"))?),
        None => None,
    };

    let inner_client = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| format!("failover.tls.ca: {e}"))?;
    let verifier = Arc::new(PartnerClientVerifier { inner: inner_client, peer_name: peer.clone() });
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| format!("failover.tls.cert/key: {e}"))?;

    let inner_server = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| format!("failover.tls.ca: {e}"))?;
    let sv = Arc::new(PartnerServerVerifier { inner: inner_server, check_name: peer.is_some() });
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(sv)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("failover.tls.cert/key: {e}"))?;
    let server_name = peer.unwrap_or_else(|| ServerName::try_from("tandem-partner").expect("valid name"));
    Ok(TlsSetup { client: Arc::new(client), server: Arc::new(server), server_name })
}

/// The secondary's check of the primary: chain to the CA (rustls), then
/// the configured name if any.
#[derive(Debug)]
struct PartnerClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    peer_name: Option<ServerName<'static>>,
}

impl ClientCertVerifier for PartnerClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let ok = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        if let Some(name) = &self.peer_name {
            let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
            cert.verify_is_valid_for_subject_name(name)
                .map_err(|_| Error::InvalidCertificate(CertificateError::NotValidForName))?;
        }
        Ok(ok)
    }

    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The primary's check of the secondary: chain to the CA always; the name
/// only when `peer-name` is configured (else any certificate of our CA is
/// the partner, as RFC 7653 §9.1 leaves the policy to configuration).
#[derive(Debug)]
struct PartnerServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for PartnerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            // rustls checks the chain before the name: a name error means
            // the chain was good.
            Err(Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }))
                if !self.check_name =>
            {
                Ok(ServerCertVerified::assertion())
            }
            r => r,
        }
    }

    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `tandem gen-tls`: a CA and one certificate per name (server and client
/// use), PEM files in `dir`: ca.pem, ca.key, NAME.pem, NAME.key.
pub fn generate(dir: &Path, names: &[String], days: u32) -> Result<Vec<std::path::PathBuf>, String> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let e = |e: rcgen::Error| e.to_string();
    let not_before = time_now();
    let not_after = not_before + std::time::Duration::from_secs(days as u64 * 86400);
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.distinguished_name.push(DnType::CommonName, "tandem failover CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca_params.not_before = not_before.into();
    ca_params.not_after = not_after.into();
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(e)?;
    let mut written = Vec::new();
    let mut write = |name: &str, body: &str, secret: bool| -> Result<(), String> {
        let p = dir.join(name);
        std::fs::write(&p, body).map_err(|e| format!("{}: {e}", p.display()))?;
        if secret {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
        written.push(p);
        Ok(())
    };
    write("ca.pem", &ca.pem(), false)?;
    write("ca.key", &ca_key_pem, true)?;
    for name in names {
        let mut p = CertificateParams::new(vec![name.clone()]).map_err(e)?;
        p.distinguished_name.push(DnType::CommonName, name.as_str());
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = not_before.into();
        p.not_after = not_after.into();
        let key = KeyPair::generate().map_err(e)?;
        let cert = p.signed_by(&key, &ca).map_err(e)?;
        write(&format!("{name}.pem"), &cert.pem(), false)?;
        write(&format!("{name}.key"), &key.serialize_pem(), true)?;
    }
    Ok(written)
}

fn time_now() -> std::time::SystemTime {
    // A minute back, so a partner whose clock is slightly behind accepts it.
    std::time::SystemTime::now() - std::time::Duration::from_secs(60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load_and_names_are_checked() {
        let d = std::env::temp_dir().join(format!("tandem-tls-{}", std::process::id()));
        generate(&d, &["a.example".into(), "b.example".into()], 30).unwrap();
        let ok = load(&d.join("a.example.pem"), &d.join("a.example.key"), &d.join("ca.pem"), Some("b.example"));
        assert!(ok.is_ok(), "{:?}", ok.err());
        let bad = load(&d.join("a.example.pem"), &d.join("missing.key"), &d.join("ca.pem"), None);
        assert!(bad.err().unwrap().contains("failover.tls.key"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
