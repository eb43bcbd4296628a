//! The facility's broker CA and the certificates of local clusters.
//!
//! The CA is made once per state directory (`<state>/brokers/ca/`: `ca.pem`,
//! and `ca-key.pem` readable by the host's user only) and signs one server
//! certificate per cluster start, for the advertise address. Clients verify a
//! broker against `ca.pem`, which the host serves at [`CA_PATH`].

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// Where the main listener serves the CA certificate (PEM), without a token.
pub const CA_PATH: &str = "/.well-known/s3m/broker-ca.pem";

/// A cluster's server certificate and key, PEM.
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct FacilityCa {
    cert_pem: String,
    key_pem: String,
    /// `<state>/brokers/ca/ca.pem`, for the brokers' own configuration.
    cert_path: PathBuf,
}

impl FacilityCa {
    /// The CA of `dir`, made there first if it has none.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        if cert_path.exists() && key_path.exists() {
            let cert_pem = std::fs::read_to_string(&cert_path)
                .with_context(|| format!("reading {}", cert_path.display()))?;
            let key_pem = std::fs::read_to_string(&key_path)
                .with_context(|| format!("reading {}", key_path.display()))?;
            let ca = Self {
                cert_pem,
                key_pem,
                cert_path,
            };
            // Fails here, at start-up, rather than at the first provision.
            ca.issuer().with_context(|| {
                format!(
                    "the broker CA in {} is unreadable; remove ca.pem and ca-key.pem there to make a new one",
                    dir.display()
                )
            })?;
            return Ok(ca);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "S3M");
        name.push(
            DnType::CommonName,
            format!("S3M broker CA {}", uuid::Uuid::new_v4().simple()),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        (params.not_before, params.not_after) = validity(3650);
        let cert = params.self_signed(&key)?;
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        super::local::write_private(&key_path, key_pem.as_bytes())?;
        super::local::write_private(&cert_path, cert_pem.as_bytes())?;
        tracing::info!(path = %cert_path.display(), "made the facility's broker CA");
        Ok(Self {
            cert_pem,
            key_pem,
            cert_path,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    fn issuer(&self) -> anyhow::Result<Issuer<'static, KeyPair>> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, key)?)
    }

    /// A server certificate for `host` (an IP address or a DNS name).
    pub fn issue(&self, host: &str, cluster: &str) -> anyhow::Result<ServerCert> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![host.to_string()])
            .with_context(|| format!("{host:?} is neither an IP address nor a DNS name"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("s3m broker {cluster}"));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = validity(825);
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok(ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// One CA for every host on the same key-value store (hosts behind one load
/// balancer hand out brokers that clients verify with whichever host's CA
/// they fetched): the first host to start puts its CA under `brokers/ca`,
/// and every host writes that one into `dir` before its provider loads it.
pub async fn share_ca(
    store: &dyn crate::capabilities::key_value::Store,
    dir: &Path,
) -> anyhow::Result<()> {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Shared {
        cert: String,
        key: String,
    }
    const KEY: &str = "brokers/ca";
    let kv = |e| anyhow::anyhow!("key-value, reading the shared broker CA: {e}");
    let shared = match store.get(KEY).await.map_err(kv)? {
        Some(bytes) => bytes,
        None => {
            let mine = FacilityCa::load_or_create(dir)?;
            let bytes = serde_json::to_vec(&Shared {
                cert: mine.cert_pem,
                key: mine.key_pem,
            })?;
            if store
                .compare_and_swap(KEY, None, &bytes)
                .await
                .map_err(kv)?
            {
                return Ok(());
            }
            // Another host put its CA first: use that one.
            store
                .get(KEY)
                .await
                .map_err(kv)?
                .context("the shared broker CA vanished from key-value")?
        }
    };
    let shared: Shared = serde_json::from_slice(&shared)
        .context("the shared broker CA in key-value (brokers/ca) is unreadable")?;
    let current = std::fs::read_to_string(dir.join("ca.pem")).unwrap_or_default();
    if current != shared.cert {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        super::local::write_private(&dir.join("ca-key.pem"), shared.key.as_bytes())?;
        super::local::write_private(&dir.join("ca.pem"), shared.cert.as_bytes())?;
        tracing::info!(dir = %dir.display(), "using the broker CA shared through key-value");
    }
    Ok(())
}

/// From yesterday (clock skew) to `days` ahead.
fn validity(days: i64) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (
        now - time::Duration::days(1),
        now + time::Duration::days(days),
    )
}

/// A TLS client configuration that trusts only `ca_pem`.
pub fn client_config(
    ca_pem: &str,
) -> anyhow::Result<std::sync::Arc<tokio_rustls::rustls::ClientConfig>> {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("the broker CA is not PEM")?)?;
    }
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    use rustls::client::danger::ServerCertVerifier;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};

    #[test]
    fn the_ca_is_made_once_and_signs_what_a_client_trusts() {
        let dir = tempfile::tempdir().unwrap();
        let ca = FacilityCa::load_or_create(&dir.path().join("ca")).unwrap();
        let again = FacilityCa::load_or_create(&dir.path().join("ca")).unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca/ca-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the CA key is private");

        let server = again.issue("127.0.0.1", "c1").unwrap();
        assert!(client_config(ca.cert_pem()).is_ok());
        let cert = CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).unwrap();
        let ip = ServerName::try_from("127.0.0.1").unwrap();
        verifier(ca.cert_pem())
            .verify_server_cert(&cert, &[], &ip, &[], UnixTime::now())
            .expect("the CA's certificate verifies for its address");
        let other = ServerName::try_from("10.0.0.1").unwrap();
        assert!(verifier(ca.cert_pem())
            .verify_server_cert(&cert, &[], &other, &[], UnixTime::now())
            .is_err());
        // Another facility's CA does not verify it.
        let dir2 = tempfile::tempdir().unwrap();
        let foreign = FacilityCa::load_or_create(dir2.path()).unwrap();
        assert!(verifier(foreign.cert_pem())
            .verify_server_cert(&cert, &[], &ip, &[], UnixTime::now())
            .is_err());
    }

    fn verifier(ca_pem: &str) -> std::sync::Arc<rustls::client::WebPkiServerVerifier> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap()
    }
}
