//! `rediss://` against a real redis-server with TLS: a private CA from `redis.tls_ca_file`, a
//! client certificate when the server demands one, and a refused untrusted server.

use std::path::{Path, PathBuf};

use anomaly_store::RedisConfig;
use anomaly_store::Store;
use anomaly_testkit::{RedisServer, free_port};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for `localhost` and a client certificate, as PEM files.
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        for (name, sans) in [("server", vec!["localhost".to_owned()]), ("client", vec![])] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            // OpenSSL takes a certificate whose subject equals its issuer's for self-signed.
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Pki { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn path(&self, name: &str) -> String {
        self.file(name).display().to_string()
    }
}

fn tls_server(pki: &Pki, auth_clients: &str) -> (RedisServer, u16) {
    let port = free_port();
    let server = RedisServer::start_with_args(&[
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        &pki.path("server.pem"),
        "--tls-key-file",
        &pki.path("server.key"),
        "--tls-ca-cert-file",
        &pki.path("ca.pem"),
        "--tls-auth-clients",
        auth_clients,
    ]);
    (server, port)
}

fn config(port: u16, ca: Option<&Path>) -> RedisConfig {
    RedisConfig {
        tls_ca_file: ca.map(Path::to_path_buf),
        timeout: std::time::Duration::from_secs(2),
        ..anomaly_testkit::redis_config(&format!("rediss://localhost:{port}"), "tls")
    }
}

#[tokio::test]
async fn talks_tls_to_a_server_of_a_private_ca() {
    let pki = Pki::new();
    let (_server, port) = tls_server(&pki, "no");
    let cfg = config(port, Some(&pki.file("ca.pem")));
    cfg.validate().unwrap();
    let store = Store::connect(&cfg).unwrap();
    store.ping().await.unwrap();
    let k = crate::key("tls", 3);
    store.mark_dirty(std::slice::from_ref(&k)).await.unwrap();
    assert_eq!(store.dirty_len().await.unwrap(), 1);
}

#[tokio::test]
async fn refuses_a_server_it_does_not_trust() {
    let pki = Pki::new();
    let (_server, port) = tls_server(&pki, "no");
    // The system's roots do not include the test CA.
    let store = Store::connect(&config(port, None)).unwrap();
    let err = store.ping().await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
}

#[tokio::test]
async fn presents_a_client_certificate_when_the_server_demands_one() {
    let pki = Pki::new();
    let (_server, port) = tls_server(&pki, "yes");
    let without = Store::connect(&config(port, Some(&pki.file("ca.pem")))).unwrap();
    assert!(without.ping().await.is_err());
    let mut cfg = config(port, Some(&pki.file("ca.pem")));
    cfg.tls_cert_file = Some(pki.file("client.pem"));
    cfg.tls_key_file = Some(pki.file("client.key"));
    cfg.validate().unwrap();
    Store::connect(&cfg).unwrap().ping().await.unwrap();
}

#[test]
fn tls_settings_are_validated() {
    let mut cfg = config(6379, Some(Path::new("/ca.pem")));
    cfg.url = "redis://localhost:6379".into();
    let err = cfg.validate().unwrap_err();
    assert!(err.to_string().contains("redis.tls_ca_file"), "{err}");
    let mut cfg = config(6379, None);
    cfg.tls_cert_file = Some("/client.pem".into());
    let err = cfg.validate().unwrap_err();
    assert!(err.to_string().contains("redis.tls_cert_file"), "{err}");
    // A missing file is named when connecting.
    let cfg = config(6379, Some(Path::new("/nonexistent/ca.pem")));
    let err = Store::connect(&cfg).unwrap_err();
    assert!(err.to_string().contains("redis.tls_ca_file"), "{err}");
}
