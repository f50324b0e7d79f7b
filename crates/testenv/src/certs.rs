//! The control plane's credentials: a CA, the apiserver's serving certificate, the
//! service-account signing key, an admin token and the admin kubeconfig.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::Result;
use base64::Engine;
use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::ADMIN_USER;

/// Files written for the apiserver, and the admin token for the kubeconfig.
pub(crate) struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_public_key: PathBuf,
    pub token_file: PathBuf,
    ca_pem: String,
    admin_token: String,
}

/// A test CA and a serving certificate it signed for `localhost` and 127.0.0.1, as PEM.
pub struct TestTls {
    /// The CA certificate clients trust.
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key.
    pub key_pem: String,
}

/// A fresh CA and a serving certificate for a local test server named `common_name`.
pub fn test_tls(common_name: &str) -> Result<TestTls> {
    let (ca_pem, cert_pem, key_pem) = ca_and_serving(common_name, &[])?;
    Ok(TestTls {
        ca_pem,
        cert_pem,
        key_pem,
    })
}

/// A CA, and a serving certificate it signed for localhost, 127.0.0.1 and `extra` names.
fn ca_and_serving(common_name: &str, extra: &[SanType]) -> Result<(String, String, String)> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "testenv-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let serving_key = KeyPair::generate()?;
    let mut serving = CertificateParams::default();
    serving
        .distinguished_name
        .push(DnType::CommonName, common_name);
    serving.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ];
    serving.subject_alt_names.extend(extra.iter().cloned());
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &issuer)?;
    Ok((
        ca_cert.pem(),
        serving_cert.pem(),
        serving_key.serialize_pem(),
    ))
}

pub(crate) fn write(root: &Path) -> Result<Pki> {
    let dir = root.join("pki");
    std::fs::create_dir_all(&dir)?;
    let (ca_pem, serving_cert_pem, serving_key_pem) = ca_and_serving(
        "kube-apiserver",
        &[
            SanType::DnsName("kubernetes.default.svc".try_into()?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
        ],
    )?;

    let sa_key = KeyPair::generate()?;
    let admin_token: String = {
        let mut rng = rand::rng();
        (0..40)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
            .collect()
    };

    let pki = Pki {
        ca_cert: dir.join("ca.crt"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        sa_key: dir.join("service-account.key"),
        sa_public_key: dir.join("service-account.pub"),
        token_file: dir.join("tokens.csv"),
        ca_pem,
        admin_token,
    };
    std::fs::write(&pki.ca_cert, &pki.ca_pem)?;
    std::fs::write(&pki.serving_cert, serving_cert_pem)?;
    std::fs::write(&pki.serving_key, serving_key_pem)?;
    std::fs::write(&pki.sa_key, sa_key.serialize_pem())?;
    std::fs::write(&pki.sa_public_key, sa_key.public_key_pem())?;
    std::fs::write(
        &pki.token_file,
        format!(
            "{},{ADMIN_USER},{ADMIN_USER},\"system:masters\"\n",
            pki.admin_token
        ),
    )?;
    Ok(pki)
}

/// The admin kubeconfig for `server`.
pub(crate) fn kubeconfig(server: &str, pki: &Pki) -> Result<String> {
    let ca = base64::engine::general_purpose::STANDARD.encode(&pki.ca_pem);
    Ok(format!(
        "apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {ADMIN_USER}
  user:
    token: {token}
contexts:
- name: testenv
  context:
    cluster: testenv
    user: {ADMIN_USER}
    namespace: default
current-context: testenv
",
        token = pki.admin_token
    ))
}
