//! Certificates for a TLS `redis-server`, made at test time.
//!
//! [`TestCa`] is a fresh certificate authority (a new key every time, so a
//! certificate of one test can never be trusted by another);
//! [`TestCa::issue`] signs a server certificate for the names given. Both
//! come as PEM, which is what `redis-server --tls-*-file` reads and what a
//! client is given as its trusted CA.
//!
//! ```no_run
//! use cachex_testkit::{RedisServer, TestCa};
//!
//! let ca = TestCa::new();
//! let server = RedisServer::start_tls(&ca.issue(&["127.0.0.1"]));
//! println!("{} trusts {}", server.tls_url(), ca.cert_pem());
//! ```

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority of the test's own.
pub struct TestCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A server certificate and its private key, in PEM, signed by a
/// [`TestCa`] (whose certificate comes along: `redis-server` wants it too).
#[derive(Clone, Debug)]
pub struct ServerCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    /// The certificate of the CA that signed it.
    pub ca_pem: String,
}

impl TestCa {
    /// A new CA, with a new key.
    ///
    /// # Panics
    /// If the key or certificate cannot be made (a bug in the parameters
    /// here, never the environment).
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "cachex test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA's certificate: what a client trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `names`: host names, or IP addresses such
    /// as `127.0.0.1` (stored as IP subject alternative names).
    ///
    /// # Panics
    /// If a name is not a valid DNS name or IP address.
    pub fn issue(&self, names: &[&str]) -> ServerCert {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server certificate names");
        params
            .distinguished_name
            .push(DnType::CommonName, "cachex test server");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}
