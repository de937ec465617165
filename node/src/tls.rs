//! Mutual TLS links between nodes, and the cluster's certificates.
//!
//! Every cluster has its own certificate authority, made by
//! `holdfast certs init` ([`certs_init`]) in the config's `certs` folder:
//!
//! * `ca.pem`, `ca.key`: the cluster CA (the only trust anchor of a node);
//! * `<node>.pem`, `<node>.key`: each node's certificate, signed by the CA,
//!   naming the node as its DNS subject alternative name (and common name),
//!   valid for both server and client authentication.
//!
//! A node name is used as is as the certificate's DNS name, so on TLS links
//! a node name must also be a DNS label: letters, digits, `-` and `_` (which
//! the TLS stack accepts in names), not starting or ending with `-`, not only
//! digits, at most 63 characters; and names must differ ignoring case (DNS
//! names do not tell `FE1` from `fe1`). [`certs_init`] refuses other names.
//!
//! On a link ([`TlsLink`]) the caller verifies that the listener's
//! certificate names the node it meant to reach; the listener asks for a
//! client certificate and learns who called from it:
//!
//! * a certificate of this cluster → [`PeerIdentity::Node`] with the name it
//!   carries (the transport then checks that every frame agrees);
//! * no certificate → [`PeerIdentity::Anonymous`]: an IM client, the load
//!   generator or the command-line tool, which may only speak as a client;
//! * a certificate of any other authority → the handshake fails and the
//!   connection is refused.
//!
//! Handshakes are bounded in time, so a silent or slow peer cannot hold a
//! connection open forever. Links speak TLS 1.3 only, with the `ring`
//! provider, and without session resumption (every connection proves its
//! certificate afresh).

use crate::config::Config;
use holdfast_host::transport::{BoxFuture, BoxStream, Link, PeerIdentity};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{NoServerSessionStorage, ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Lifetime of a node certificate (about ten years).
const NODE_VALIDITY: Duration = Duration::from_secs(3652 * 86_400);
/// Lifetime of the cluster CA (about twenty years: it outlives the node
/// certificates it signs, including ones added to the cluster later).
const CA_VALIDITY: Duration = Duration::from_secs(7305 * 86_400);
/// Certificates are valid from a day before they are made, for clocks that
/// lag the machine that made them.
const BACKDATE: Duration = Duration::from_secs(86_400);
/// The CA's subject. New node certificates name it as their issuer, also
/// when they are signed by a CA made by an earlier run.
const CA_NAME: &str = "holdfast cluster CA";

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{file}: cannot read: {err}")]
    Read { file: String, err: io::Error },
    #[error("{file}: cannot write: {err}")]
    Write { file: String, err: io::Error },
    #[error("{file}: {msg}")]
    Bad { file: String, msg: String },
    #[error("node name {name:?}: {msg}")]
    BadName { name: String, msg: String },
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS setup: {0}")]
    Setup(#[from] rustls::Error),
}

fn bad(file: &Path, msg: impl Into<String>) -> TlsError {
    TlsError::Bad {
        file: file.display().to_string(),
        msg: msg.into(),
    }
}

/// The certificate and key files of a node.
pub fn node_files(certs: &Path, node: &str) -> (PathBuf, PathBuf) {
    (
        certs.join(format!("{node}.pem")),
        certs.join(format!("{node}.key")),
    )
}

/// The cluster CA's certificate and key files.
pub fn ca_files(certs: &Path) -> (PathBuf, PathBuf) {
    (certs.join("ca.pem"), certs.join("ca.key"))
}

/// Checks that a node name can be a certificate's DNS name (see the module
/// documentation for the rule).
pub fn check_node_name(name: &str) -> Result<(), TlsError> {
    let ok = name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && matches!(ServerName::try_from(name), Ok(ServerName::DnsName(_)));
    if ok {
        Ok(())
    } else {
        Err(TlsError::BadName {
            name: name.to_string(),
            msg: "on TLS links a node name is its certificate's DNS name: use letters, digits, \
                  '-' and '_', not starting or ending with '-', not only digits, at most 63 \
                  characters"
                .into(),
        })
    }
}

fn read(file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|err| TlsError::Read {
        file: file.display().to_string(),
        err,
    })
}

fn load_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(file)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(file, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(file, "contains no certificate"));
    }
    Ok(certs)
}

fn load_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(file)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => bad(file, "contains no private key"),
        e => bad(file, format!("not a PEM private key file: {e}")),
    })
}

fn load_roots(file: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(file)? {
        roots
            .add(cert)
            .map_err(|e| bad(file, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks that `chain` is a certificate for `node` signed by the CA.
fn verify_node_cert(
    chain: &[CertificateDer<'_>],
    roots: &RootCertStore,
    provider: &CryptoProvider,
    node: &str,
    cert_file: &Path,
    ca_file: &Path,
) -> Result<(), TlsError> {
    let parsed = ParsedCertificate::try_from(&chain[0])
        .map_err(|e| bad(cert_file, format!("not a usable certificate: {e}")))?;
    verify_server_cert_signed_by_trust_anchor(
        &parsed,
        roots,
        &chain[1..],
        UnixTime::now(),
        provider.signature_verification_algorithms.all,
    )
    .map_err(|e| {
        bad(
            cert_file,
            format!(
                "not a valid certificate of the CA in {}: {e}",
                ca_file.display()
            ),
        )
    })?;
    let name = ServerName::try_from(node).map_err(|_| TlsError::BadName {
        name: node.to_string(),
        msg: "not a DNS name".into(),
    })?;
    verify_server_name(&parsed, &name).map_err(|e| {
        bad(
            cert_file,
            format!("not a certificate for node {node:?}: {e}"),
        )
    })?;
    Ok(())
}

/// Mutual-TLS link for the transport.
pub struct TlsLink {
    connector: TlsConnector,
    /// `None` on a client's link, which accepts no connections.
    acceptor: Option<TlsAcceptor>,
    handshake_timeout: Duration,
}

impl TlsLink {
    /// A node's link: presents `<certs>/<node>.pem` + `<certs>/<node>.key`,
    /// trusts only `<certs>/ca.pem`.
    ///
    /// Outbound, the listener's certificate must be for the peer node's
    /// name. Inbound, a client certificate is requested: one signed by the
    /// cluster CA gives [`PeerIdentity::Node`] with the name it carries, none
    /// gives [`PeerIdentity::Anonymous`], any other certificate fails the
    /// handshake.
    ///
    /// The node's own certificate is checked here (signed by the CA, for
    /// this node's name, not expired), so a misplaced file is reported at
    /// start-up rather than as refused connections.
    pub fn for_node(certs: &Path, node: &str) -> Result<TlsLink, TlsError> {
        check_node_name(node)?;
        let provider = provider();
        let (ca_file, _) = ca_files(certs);
        let (cert_file, key_file) = node_files(certs, node);
        let roots = load_roots(&ca_file)?;
        let chain = load_certs(&cert_file)?;
        let key = load_key(&key_file)?;
        verify_node_cert(&chain, &roots, &provider, node, &cert_file, &ca_file)?;

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| bad(&ca_file, format!("cannot verify clients with it: {e}")))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                bad(
                    &key_file,
                    format!("not the key of {}: {e}", cert_file.display()),
                )
            })?;
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;

        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| {
                bad(
                    &key_file,
                    format!("not the key of {}: {e}", cert_file.display()),
                )
            })?;
        client.resumption = Resumption::disabled();

        Ok(TlsLink {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: Some(TlsAcceptor::from(Arc::new(server))),
            handshake_timeout: HANDSHAKE_TIMEOUT,
        })
    }

    /// A client's link (IM clients, load generator, command-line tool): no
    /// certificate, verifies listeners against `<certs>/ca.pem`. It accepts
    /// no inbound connections.
    pub fn for_client(certs: &Path) -> Result<TlsLink, TlsError> {
        let (ca_file, _) = ca_files(certs);
        let roots = load_roots(&ca_file)?;
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.resumption = Resumption::disabled();
        Ok(TlsLink {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: None,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        })
    }

    /// Bounds handshakes by `limit` instead of [`HANDSHAKE_TIMEOUT`].
    pub fn with_handshake_timeout(mut self, limit: Duration) -> TlsLink {
        self.handshake_timeout = limit;
        self
    }
}

async fn bounded<T>(
    limit: Duration,
    handshake: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(limit, handshake).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("TLS handshake not done within {limit:?}"),
        )),
    }
}

impl Link for TlsLink {
    fn connect<'a>(
        &'a self,
        peer: &'a str,
        tcp: TcpStream,
    ) -> BoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move {
            let name = ServerName::try_from(peer.to_string()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("node name {peer:?} is not a certificate name"),
                )
            })?;
            let tls = bounded(self.handshake_timeout, self.connector.connect(name, tcp)).await?;
            Ok(Box::new(tls) as BoxStream)
        })
    }

    fn accept(&self, tcp: TcpStream) -> BoxFuture<'_, io::Result<(BoxStream, PeerIdentity)>> {
        Box::pin(async move {
            let acceptor = self.acceptor.as_ref().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a client's link accepts no connections",
                )
            })?;
            let tls = bounded(self.handshake_timeout, acceptor.accept(tcp)).await?;
            // The verifier has checked the chain up to the cluster CA; the
            // end-entity certificate names the node.
            let identity = match tls.get_ref().1.peer_certificates() {
                Some([cert, ..]) => PeerIdentity::Node(
                    certificate_node(cert)
                        .map_err(|m| io::Error::new(io::ErrorKind::PermissionDenied, m))?,
                ),
                _ => PeerIdentity::Anonymous,
            };
            Ok((Box::new(tls) as BoxStream, identity))
        })
    }
}

/// The node a certificate of the cluster names: its one DNS subject
/// alternative name, confirmed by the certificate verifier's own name check.
fn certificate_node(cert: &CertificateDer<'_>) -> Result<String, String> {
    let names = dns_names(cert).ok_or("the peer's certificate is malformed")?;
    let [name] = names.as_slice() else {
        return Err(format!(
            "the peer's certificate names {} DNS names, not one node",
            names.len()
        ));
    };
    check_node_name(name).map_err(|e| e.to_string())?;
    let parsed = ParsedCertificate::try_from(cert).map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.as_str()).map_err(|e| e.to_string())?;
    verify_server_name(&parsed, &server_name)
        .map_err(|e| format!("the peer's certificate is not valid for {name:?}: {e}"))?;
    Ok(name.clone())
}

/// One DER element of `input`: its tag, its contents and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tags: not in the parts read here
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The contents of the DER element `input` starts with, if it has `tag`.
fn der_expect(tag: u8, input: &[u8]) -> Option<&[u8]> {
    let (t, body, _) = der(input)?;
    (t == tag).then_some(body)
}

/// The DNS names of an X.509 certificate's subject alternative name
/// extension (RFC 5280 §4.1, §4.2.1.6). `None` if the DER is malformed.
fn dns_names(cert: &[u8]) -> Option<Vec<String>> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    const BOOLEAN: u8 = 0x01;
    const OCTET_STRING: u8 = 0x04;
    const EXTENSIONS: u8 = 0xa3; // [3] EXPLICIT, in TBSCertificate
    const DNS_NAME: u8 = 0x82; // [2] IMPLICIT IA5String, in GeneralName
    const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11]; // 2.5.29.17

    let cert = der_expect(SEQUENCE, cert)?;
    let mut tbs = der_expect(SEQUENCE, cert)?;
    let mut names = Vec::new();
    while !tbs.is_empty() {
        let (tag, body, rest) = der(tbs)?;
        tbs = rest;
        if tag != EXTENSIONS {
            continue;
        }
        let mut extensions = der_expect(SEQUENCE, body)?;
        while !extensions.is_empty() {
            let (tag, extension, rest) = der(extensions)?;
            extensions = rest;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, mut fields) = der(extension)?;
            if tag != OID {
                return None;
            }
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            let (mut tag, mut value, rest) = der(fields)?;
            if tag == BOOLEAN {
                fields = rest;
                (tag, value, _) = der(fields)?;
            }
            if tag != OCTET_STRING {
                return None;
            }
            let mut general_names = der_expect(SEQUENCE, value)?;
            while !general_names.is_empty() {
                let (tag, name, rest) = der(general_names)?;
                general_names = rest;
                if tag == DNS_NAME {
                    names.push(String::from_utf8(name.to_vec()).ok()?);
                }
            }
        }
    }
    Some(names)
}

/// Certificate parameters valid from `back` before now to `ahead` after.
fn dated(back: Duration, ahead: Duration) -> CertificateParams {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let mut p = CertificateParams::default();
    p.not_before = epoch + now.saturating_sub(back);
    p.not_after = epoch + now + ahead;
    p
}

/// The CA's parameters. They are the same on every run, so a CA made by an
/// earlier run can sign new node certificates (only its subject and key
/// matter to them).
fn ca_params() -> CertificateParams {
    let mut p = dated(BACKDATE, CA_VALIDITY);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn node_params(node: &str) -> Result<CertificateParams, TlsError> {
    let mut p = dated(BACKDATE, NODE_VALIDITY);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node);
    p.distinguished_name = dn;
    p.subject_alt_names = vec![SanType::DnsName(node.try_into()?)];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// Writes a file whole or not at all (through a temporary file renamed over
/// it); private keys get mode 0600 from the start.
fn write_file(path: &Path, data: &[u8], private: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let werr = |err| TlsError::Write {
        file: path.display().to_string(),
        err,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(&tmp).map_err(werr)?;
    f.write_all(data).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(werr)
}

/// The cluster CA: its certificate (as an issuer for rcgen) and key.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// Creates a cluster CA (`ca.pem`, `ca.key`) and, for every node of the
/// config, `<name>.pem` and `<name>.key` signed by it, in `config.certs`
/// (created if missing).
///
/// Node certificates carry the node name as a DNS subject alternative name
/// (and as common name), are valid for both server and client
/// authentication, and for about ten years; the CA for about twenty.
///
/// An existing CA is kept unless `force`: then only missing node
/// certificates (or ones whose key is missing) are made, signed by the
/// existing CA, so adding a node to the config is `certs init` again. With
/// `force`, a new CA and new certificates for every node replace the old
/// ones. Private keys are written with mode 0600. Returns the files
/// written.
pub fn certs_init(config: &Config, force: bool) -> Result<Vec<PathBuf>, TlsError> {
    let mut lower = BTreeMap::new();
    for n in &config.nodes {
        check_node_name(&n.name)?;
        if let Some(other) = lower.insert(n.name.to_ascii_lowercase(), &n.name) {
            return Err(TlsError::BadName {
                name: n.name.clone(),
                msg: format!(
                    "certificate names ignore case, and {other:?} is also a node of the cluster"
                ),
            });
        }
    }
    let dir = &config.certs;
    std::fs::create_dir_all(dir).map_err(|err| TlsError::Write {
        file: dir.display().to_string(),
        err,
    })?;
    let (ca_cert_file, ca_key_file) = ca_files(dir);
    let mut written = Vec::new();

    let renew = force || !ca_cert_file.exists();
    let missing: Vec<&str> = config
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .filter(|name| {
            let (c, k) = node_files(dir, name);
            renew || !c.exists() || !k.exists()
        })
        .collect();

    let mut ca = None;
    if renew {
        let key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&key)?;
        // The key first: a ca.pem on disk always has its key beside it.
        write_file(&ca_key_file, key.serialize_pem().as_bytes(), true)?;
        written.push(ca_key_file.clone());
        write_file(&ca_cert_file, cert.pem().as_bytes(), false)?;
        written.push(ca_cert_file.clone());
        ca = Some(Ca { cert, key });
    } else if !missing.is_empty() {
        if !ca_key_file.exists() {
            return Err(bad(
                &ca_key_file,
                format!(
                    "missing: the CA's key is needed to sign certificates for {} \
                     (restore it, or replace the CA and every certificate with --force)",
                    missing.join(", ")
                ),
            ));
        }
        let pem = String::from_utf8(read(&ca_key_file)?)
            .map_err(|_| bad(&ca_key_file, "not a PEM private key file"))?;
        let key = KeyPair::from_pem(&pem)
            .map_err(|e| bad(&ca_key_file, format!("not a usable CA key: {e}")))?;
        let cert = ca_params().self_signed(&key)?;
        ca = Some(Ca { cert, key });
    }

    if let Some(ca) = ca {
        let provider = provider();
        let roots = load_roots(&ca_cert_file)?;
        for name in missing {
            let (cert_file, key_file) = node_files(dir, name);
            let key = KeyPair::generate()?;
            let cert = node_params(name)?.signed_by(&key, &ca.cert, &ca.key)?;
            // A CA kept from an earlier run must really be the one on disk.
            verify_node_cert(
                &[cert.der().clone()],
                &roots,
                &provider,
                name,
                &cert_file,
                &ca_cert_file,
            )
            .map_err(|_| {
                bad(
                    &ca_cert_file,
                    format!(
                        "does not match {} or was not made by `holdfast certs init`; \
                         replace the CA and every certificate with --force",
                        ca_key_file.display()
                    ),
                )
            })?;
            write_file(&key_file, key.serialize_pem().as_bytes(), true)?;
            written.push(key_file);
            write_file(&cert_file, cert.pem().as_bytes(), false)?;
            written.push(cert_file);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[cluster]
domain = "corp.example"
links = "tls"

[[node]]
name = "fe1"
roles = ["front_end"]
listen = "127.0.0.1:7101"
archiver = "arch_1"

[[node]]
name = "arch_1"
roles = ["archiver"]
listen = "127.0.0.1:7201"
database = "db1"

[[node]]
name = "db1"
roles = ["database"]
listen = "127.0.0.1:7301"
"#;

    fn config(text: &str, dir: &Path) -> Config {
        Config::parse(text, Path::new("c.toml"), dir).unwrap()
    }

    fn names(files: &[PathBuf]) -> Vec<String> {
        let mut v: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn certs_init_keeps_the_ca_and_adds_missing_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(CONFIG, dir.path());
        let written = certs_init(&c, false).unwrap();
        assert_eq!(
            names(&written),
            [
                "arch_1.key",
                "arch_1.pem",
                "ca.key",
                "ca.pem",
                "db1.key",
                "db1.pem",
                "fe1.key",
                "fe1.pem"
            ]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["ca.key", "fe1.key"] {
                let mode = std::fs::metadata(c.certs.join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
        let ca = std::fs::read(c.certs.join("ca.pem")).unwrap();
        let fe1 = std::fs::read(c.certs.join("fe1.pem")).unwrap();

        // Again, with a node added: only its files are new.
        let more = CONFIG.to_string()
            + "\n[[node]]\nname = \"fe2\"\nroles = [\"front_end\"]\n\
               listen = \"127.0.0.1:7102\"\narchiver = \"arch_1\"\n";
        let c = config(&more, dir.path());
        let written = certs_init(&c, false).unwrap();
        assert_eq!(names(&written), ["fe2.key", "fe2.pem"]);
        assert_eq!(std::fs::read(c.certs.join("ca.pem")).unwrap(), ca);
        assert_eq!(std::fs::read(c.certs.join("fe1.pem")).unwrap(), fe1);
        // The new certificate is of the kept CA.
        TlsLink::for_node(&c.certs, "fe2").unwrap();
        TlsLink::for_node(&c.certs, "fe1").unwrap();

        // Nothing missing: nothing written.
        assert!(certs_init(&c, false).unwrap().is_empty());

        // With force, a new CA and new certificates.
        let written = certs_init(&c, true).unwrap();
        assert_eq!(written.len(), 10);
        assert_ne!(std::fs::read(c.certs.join("ca.pem")).unwrap(), ca);
        TlsLink::for_node(&c.certs, "fe1").unwrap();
    }

    #[test]
    fn a_missing_ca_key_is_needed_only_to_sign() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(CONFIG, dir.path());
        certs_init(&c, false).unwrap();
        std::fs::remove_file(c.certs.join("ca.key")).unwrap();
        // Kept offline: fine while every node has its certificate.
        assert!(certs_init(&c, false).unwrap().is_empty());
        std::fs::remove_file(c.certs.join("db1.pem")).unwrap();
        let e = certs_init(&c, false).unwrap_err().to_string();
        assert!(e.contains("ca.key") && e.contains("db1"), "{e}");
    }

    #[test]
    fn a_ca_not_matching_its_key_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(CONFIG, dir.path());
        certs_init(&c, false).unwrap();
        let other = tempfile::tempdir().unwrap();
        let o = config(CONFIG, other.path());
        certs_init(&o, false).unwrap();
        std::fs::copy(o.certs.join("ca.key"), c.certs.join("ca.key")).unwrap();
        std::fs::remove_file(c.certs.join("fe1.key")).unwrap();
        let e = certs_init(&c, false).unwrap_err().to_string();
        assert!(e.contains("ca.pem") && e.contains("--force"), "{e}");
        assert!(!c.certs.join("fe1.key").exists());
    }

    #[test]
    fn names_that_cannot_be_dns_names_are_refused() {
        for bad in ["-fe1", "fe1-", "123"] {
            let text = CONFIG.replace("\"db1\"", &format!("{bad:?}"));
            let dir = tempfile::tempdir().unwrap();
            let c = config(&text, dir.path());
            let e = certs_init(&c, false).unwrap_err();
            assert!(
                matches!(e, TlsError::BadName { ref name, .. } if name == bad),
                "{e}"
            );
            assert!(
                e.to_string().contains("not starting or ending with '-'"),
                "{e}"
            );
            assert!(!c.certs.exists(), "nothing is written for a bad config");
        }
        let text = CONFIG.replace("\"db1\"", "\"FE1\"");
        let dir = tempfile::tempdir().unwrap();
        let e = certs_init(&config(&text, dir.path()), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ignore case"), "{e}");
        assert!(check_node_name("arch_1").is_ok());
        assert!(check_node_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn a_link_reports_the_file_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(CONFIG, dir.path());
        let e = TlsLink::for_node(&c.certs, "fe1")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("ca.pem") && e.contains("cannot read"), "{e}");
        certs_init(&c, false).unwrap();

        // Another node's certificate under this node's name.
        let fe1 = std::fs::read(c.certs.join("fe1.pem")).unwrap();
        std::fs::copy(c.certs.join("db1.pem"), c.certs.join("fe1.pem")).unwrap();
        let e = TlsLink::for_node(&c.certs, "fe1")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("fe1.pem") && e.contains("not a certificate for node \"fe1\""),
            "{e}"
        );

        // The matching certificate, the wrong key.
        std::fs::write(c.certs.join("fe1.pem"), fe1).unwrap();
        TlsLink::for_node(&c.certs, "fe1").unwrap();
        std::fs::copy(c.certs.join("db1.key"), c.certs.join("fe1.key")).unwrap();
        let e = TlsLink::for_node(&c.certs, "fe1")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("fe1.key") && e.contains("not the key of"), "{e}");

        // A certificate of another CA.
        let other = tempfile::tempdir().unwrap();
        let o = config(CONFIG, other.path());
        certs_init(&o, false).unwrap();
        std::fs::copy(o.certs.join("db1.pem"), c.certs.join("db1.pem")).unwrap();
        let e = TlsLink::for_node(&c.certs, "db1")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("db1.pem") && e.contains("ca.pem"), "{e}");

        std::fs::write(c.certs.join("db1.key"), "not a key").unwrap();
        std::fs::copy(o.certs.join("ca.pem"), c.certs.join("ca.pem")).unwrap();
        let e = TlsLink::for_node(&c.certs, "db1")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("db1.key") && e.contains("no private key"), "{e}");

        std::fs::write(c.certs.join("ca.pem"), "").unwrap();
        let e = TlsLink::for_client(&c.certs).err().unwrap().to_string();
        assert!(e.contains("ca.pem") && e.contains("no certificate"), "{e}");
    }

    #[test]
    fn the_peer_node_is_read_from_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(CONFIG, dir.path());
        certs_init(&c, false).unwrap();
        for node in ["fe1", "arch_1", "db1"] {
            let cert = load_certs(&c.certs.join(format!("{node}.pem"))).unwrap();
            assert_eq!(dns_names(&cert[0]).unwrap(), [node]);
            assert_eq!(certificate_node(&cert[0]).unwrap(), node);
        }

        // Two names: not a node certificate.
        let key = KeyPair::generate().unwrap();
        let mut p = node_params("fe1").unwrap();
        p.subject_alt_names
            .push(SanType::DnsName("fe2".try_into().unwrap()));
        let two = p.self_signed(&key).unwrap();
        assert_eq!(dns_names(two.der()).unwrap(), ["fe1", "fe2"]);
        assert!(certificate_node(two.der()).is_err());

        // Truncated DER is malformed, not a panic.
        let cert = load_certs(&c.certs.join("fe1.pem")).unwrap();
        for cut in [0, 1, 10, cert[0].len() / 2] {
            assert!(dns_names(&cert[0][..cut]).is_none());
        }
    }
}
