//! Mutual TLS links between nodes, and the cluster's certificates.
//!
//! Every cluster has its own certificate authority, made by
//! `holdfast certs init` ([`certs_init`]) in the config's `certs` folder:
//!
//! * `ca.pem`, `ca.key`: the cluster CA (the only trust anchor of a node);
//! * `<node>.pem`, `<node>.key`: each node's certificate, signed by the CA,
//!   naming the node as its DNS subject alternative name (and common name),
//!   valid for both server and client authentication;
//! * `users/<user>.pem`, `users/<user>.key`: a user's credential (made by
//!   `certs init` for every user homed in the config, plus `operator` and
//!   `auditor`, and by `holdfast certs user` for anyone else), naming its
//!   principal as a URI subject alternative name `urn:holdfast:<role>:<user>`
//!   (see `holdfast_actors::core::identity`), valid for client authentication only.
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
//! * a node certificate of this cluster → [`PeerIdentity::Node`] with the
//!   name it carries (the transport then checks that every frame agrees);
//! * a user credential of this cluster → [`PeerIdentity::Client`] with its
//!   principal: the connection may only speak as a client named after that
//!   principal, and the cores bind each request to it;
//! * no certificate, or one of any other authority → the handshake fails
//!   and the connection is refused (a client without a credential learns
//!   it from the TLS alert).
//!
//! Handshakes are bounded in time, so a silent or slow peer cannot hold a
//! connection open forever. Links speak TLS 1.3 only, with the `ring`
//! provider, and without session resumption (every connection proves its
//! certificate afresh).

use crate::config::Config;
use holdfast_actors::core::identity::{check_user_name, BadUserName, Principal, Role};
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
/// Lifetime of a user credential (about two years: users come and go more
/// often than nodes; `holdfast certs user --force` renews one).
const USER_VALIDITY: Duration = Duration::from_secs(730 * 86_400);
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
    #[error("user name {name:?}: {msg}")]
    BadUser { name: String, msg: BadUserName },
    #[error("no credential for {user:?} in {dir}: make one with `holdfast certs user {user}` (or point --credentials at the folder that holds it)")]
    NoCredential { user: String, dir: String },
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

/// The credential files of a user in a credentials folder.
pub fn user_files(dir: &Path, user: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{user}.pem")),
        dir.join(format!("{user}.key")),
    )
}

/// The folder `certs init` writes users' credentials to.
pub fn users_dir(certs: &Path) -> PathBuf {
    certs.join("users")
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
    /// name. Inbound, a client certificate is required: a node certificate
    /// of the cluster gives [`PeerIdentity::Node`] with the name it carries,
    /// a user credential [`PeerIdentity::Client`] with its principal; none,
    /// or any other, fails the handshake.
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

        // Every caller proves who it is: a node by its certificate, a
        // client by its user credential. A client without one fails the
        // handshake with the `certificate_required` alert.
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
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

    /// A client's link (IM and chat clients, the load generator, the
    /// command-line tool): presents `credential`, verifies listeners
    /// against `<certs>/ca.pem`. It accepts no inbound connections.
    pub fn for_client(certs: &Path, credential: &Credential) -> Result<TlsLink, TlsError> {
        let (ca_file, _) = ca_files(certs);
        let roots = load_roots(&ca_file)?;
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(credential.chain.clone(), credential.key.clone_key())
            .map_err(|e| {
                bad(
                    &credential.key_file,
                    format!("not the key of {}: {e}", credential.cert_file.display()),
                )
            })?;
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
            // end-entity certificate names the node or the principal.
            let identity = match tls.get_ref().1.peer_certificates() {
                Some([cert, ..]) => certificate_identity(cert)
                    .map_err(|m| io::Error::new(io::ErrorKind::PermissionDenied, m))?,
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "the peer presented no certificate",
                    ))
                }
            };
            Ok((Box::new(tls) as BoxStream, identity))
        })
    }
}

/// Why a peer's certificate names no one node and no one principal.
#[derive(Debug, Error)]
enum IdentityError {
    #[error("the peer's certificate is malformed: {0}")]
    Malformed(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    #[error("the peer's certificate is malformed: {0}")]
    MalformedNames(#[source] x509_parser::error::X509Error),
    /// The one DNS name is not a node's name.
    #[error(transparent)]
    NodeName(Box<TlsError>),
    /// The certificate or the name cannot be checked.
    #[error(transparent)]
    Unchecked(#[from] rustls::Error),
    #[error(transparent)]
    DnsName(#[from] rustls::pki_types::InvalidDnsNameError),
    #[error("the peer's certificate is not valid for {name:?}: {source}")]
    NotValidFor {
        name: String,
        #[source]
        source: rustls::Error,
    },
    #[error("the peer's certificate names {0:?}, not a principal")]
    NotAPrincipal(String),
    #[error(
        "the peer's certificate names {dns} DNS names and {uris} URIs: neither one node nor one user"
    )]
    NeitherNodeNorUser { dns: usize, uris: usize },
}

/// Who a certificate of the cluster names (the verifier has checked its
/// chain): a node, by its one DNS subject alternative name (confirmed by the
/// certificate verifier's own name check), or a principal, by its one
/// `urn:holdfast:` URI. Anything else is refused.
fn certificate_identity(cert: &CertificateDer<'_>) -> Result<PeerIdentity, IdentityError> {
    let (dns, uris) = subject_alt_names(cert)?;
    match (dns.as_slice(), uris.as_slice()) {
        ([name], []) => {
            check_node_name(name).map_err(|e| IdentityError::NodeName(Box::new(e)))?;
            let parsed = ParsedCertificate::try_from(cert)?;
            let server_name = ServerName::try_from(name.as_str())?;
            verify_server_name(&parsed, &server_name).map_err(|source| {
                IdentityError::NotValidFor {
                    name: name.clone(),
                    source,
                }
            })?;
            Ok(PeerIdentity::Node(name.clone()))
        }
        ([], [uri]) => Principal::of_uri(uri)
            .map(PeerIdentity::Client)
            .ok_or_else(|| IdentityError::NotAPrincipal(uri.clone())),
        _ => Err(IdentityError::NeitherNodeNorUser {
            dns: dns.len(),
            uris: uris.len(),
        }),
    }
}

/// The DNS names and URIs of a certificate's subject alternative names.
fn subject_alt_names(cert: &[u8]) -> Result<(Vec<String>, Vec<String>), IdentityError> {
    use x509_parser::extensions::GeneralName;
    let (_, x509) = x509_parser::parse_x509_certificate(cert).map_err(IdentityError::Malformed)?;
    let san = x509
        .subject_alternative_name()
        .map_err(IdentityError::MalformedNames)?;
    let (mut dns, mut uris) = (Vec::new(), Vec::new());
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        match name {
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::URI(u) => uris.push(u.to_string()),
            _ => {}
        }
    }
    Ok((dns, uris))
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

/// A user credential: client authentication only, naming its principal.
fn user_params(principal: &Principal) -> Result<CertificateParams, TlsError> {
    let mut p = dated(BACKDATE, USER_VALIDITY);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, principal.user.as_str());
    p.distinguished_name = dn;
    p.subject_alt_names = vec![SanType::URI(principal.uri().try_into()?)];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

fn check_user(user: &str) -> Result<(), TlsError> {
    check_user_name(user).map_err(|msg| TlsError::BadUser {
        name: user.to_string(),
        msg,
    })
}

/// A user's credential as a client presents it: the principal its
/// certificate names, the certificate and the key.
pub struct Credential {
    pub principal: Principal,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl Credential {
    /// Loads `user`'s credential from the folder `dir` and checks it
    /// against the cluster CA in `certs`: signed by it, for client
    /// authentication, naming `user`.
    pub fn load(certs: &Path, dir: &Path, user: &str) -> Result<Credential, TlsError> {
        check_user(user)?;
        let (cert_file, key_file) = user_files(dir, user);
        if !cert_file.exists() {
            return Err(TlsError::NoCredential {
                user: user.to_string(),
                dir: dir.display().to_string(),
            });
        }
        let chain = load_certs(&cert_file)?;
        let key = load_key(&key_file)?;
        let principal = match certificate_identity(&chain[0]) {
            Ok(PeerIdentity::Client(p)) => p,
            Ok(_) => {
                return Err(bad(
                    &cert_file,
                    "a node's certificate, not a user credential",
                ))
            }
            Err(e) => return Err(bad(&cert_file, e.to_string())),
        };
        if principal.user != user {
            return Err(bad(&cert_file, format!("names {principal}, not {user}")));
        }
        let (ca_file, _) = ca_files(certs);
        let roots = load_roots(&ca_file)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| bad(&ca_file, format!("cannot verify clients with it: {e}")))?;
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map_err(|e| {
                bad(
                    &cert_file,
                    format!(
                        "not a valid credential of the CA in {}: {e}",
                        ca_file.display()
                    ),
                )
            })?;
        Ok(Credential {
            principal,
            chain,
            key,
            cert_file,
            key_file,
        })
    }
}

/// Makes a credential for `principal` in the folder `dir` (created 0700 if
/// missing), signed by the cluster CA in `certs`. An existing credential of
/// the user is kept unless `force`. Returns the files written.
pub fn issue_user(
    certs: &Path,
    dir: &Path,
    principal: &Principal,
    force: bool,
) -> Result<Vec<PathBuf>, TlsError> {
    check_user(&principal.user)?;
    let (cert_file, _) = user_files(dir, &principal.user);
    if cert_file.exists() && !force {
        return Err(bad(
            &cert_file,
            "exists already (replace it with --force; the old credential stays valid until the CA is replaced)",
        ));
    }
    let ca = load_ca(certs, &[principal.user.as_str()])?;
    issue_users(&ca, dir, std::slice::from_ref(principal))
}

fn issue_users(ca: &Ca, dir: &Path, principals: &[Principal]) -> Result<Vec<PathBuf>, TlsError> {
    create_private_dir(dir)?;
    let mut written = Vec::new();
    for principal in principals {
        let (cert_file, key_file) = user_files(dir, &principal.user);
        let key = KeyPair::generate()?;
        let cert = user_params(principal)?.signed_by(&key, &ca.cert, &ca.key)?;
        write_file(&key_file, key.serialize_pem().as_bytes(), true)?;
        written.push(key_file);
        write_file(&cert_file, cert.pem().as_bytes(), false)?;
        written.push(cert_file);
    }
    Ok(written)
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|err| TlsError::Write {
        file: dir.display().to_string(),
        err,
    })
}

/// The cluster CA of `certs`, to sign certificates for `what`.
fn load_ca(certs: &Path, what: &[&str]) -> Result<Ca, TlsError> {
    let (ca_cert_file, ca_key_file) = ca_files(certs);
    if !ca_key_file.exists() {
        return Err(bad(
            &ca_key_file,
            format!(
                "missing: the CA's key is needed to sign certificates for {} \
                 (restore it, or replace the CA and every certificate with --force)",
                what.join(", ")
            ),
        ));
    }
    if !ca_cert_file.exists() {
        return Err(bad(
            &ca_cert_file,
            "missing: run `holdfast certs init` first",
        ));
    }
    let pem = String::from_utf8(read(&ca_key_file)?)
        .map_err(|_| bad(&ca_key_file, "not a PEM private key file"))?;
    let key = KeyPair::from_pem(&pem)
        .map_err(|e| bad(&ca_key_file, format!("not a usable CA key: {e}")))?;
    let cert = ca_params().self_signed(&key)?;
    Ok(Ca { cert, key })
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

/// The operator's credential `certs init` makes (role operator).
pub const OPERATOR: &str = "operator";
/// The auditor's credential `certs init` makes (role auditor).
pub const AUDITOR: &str = "auditor";

/// The cluster CA: its certificate (as an issuer for rcgen) and key.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// Creates a cluster CA (`ca.pem`, `ca.key`) and, for every node of the
/// config, `<name>.pem` and `<name>.key` signed by it, in `config.certs`
/// (created if missing); and a credential in `users/` for every user homed
/// in the config, for [`OPERATOR`] and for [`AUDITOR`].
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
    // Every user homed in the config, and the cluster's operator and
    // auditor, get a credential unless they have one.
    let users_dir = users_dir(dir);
    let mut principals: Vec<Principal> = config
        .cluster
        .users
        .keys()
        .map(|u| Principal::new(u.clone(), Role::User))
        .collect();
    principals.push(Principal::new(OPERATOR, Role::Operator));
    principals.push(Principal::new(AUDITOR, Role::Auditor));
    for p in &principals {
        check_user(&p.user)?;
    }
    principals.retain(|p| {
        let (c, k) = user_files(&users_dir, &p.user);
        renew || !c.exists() || !k.exists()
    });

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
    } else if !missing.is_empty() || !principals.is_empty() {
        let mut what = missing.clone();
        what.extend(principals.iter().map(|p| p.user.as_str()));
        ca = Some(load_ca(dir, &what)?);
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
        written.extend(issue_users(&ca, &users_dir, &principals)?);
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

    /// What a refused link or credential says.
    fn said<T>(refused: Result<T, TlsError>) -> String {
        refused.err().expect("refused").to_string()
    }

    /// A cluster of `CONFIG` in a fresh folder (kept while the guard
    /// lives), its certificates made.
    fn with_certs() -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let c = config(CONFIG, dir.path());
        certs_init(&c, false).unwrap();
        (dir, c)
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
                "auditor.key",
                "auditor.pem",
                "ca.key",
                "ca.pem",
                "db1.key",
                "db1.pem",
                "fe1.key",
                "fe1.pem",
                "operator.key",
                "operator.pem"
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
        assert_eq!(written.len(), 14);
        assert_ne!(std::fs::read(c.certs.join("ca.pem")).unwrap(), ca);
        TlsLink::for_node(&c.certs, "fe1").unwrap();
    }

    #[test]
    fn a_missing_ca_key_is_needed_only_to_sign() {
        let (_dir, c) = with_certs();
        std::fs::remove_file(c.certs.join("ca.key")).unwrap();
        // Kept offline: fine while every node has its certificate.
        assert!(certs_init(&c, false).unwrap().is_empty());
        std::fs::remove_file(c.certs.join("db1.pem")).unwrap();
        let e = certs_init(&c, false).unwrap_err().to_string();
        assert!(e.contains("ca.key") && e.contains("db1"), "{e}");
    }

    #[test]
    fn a_ca_not_matching_its_key_is_reported() {
        let (_dir, c) = with_certs();
        let (_other, o) = with_certs();
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
        let e = said(TlsLink::for_node(&c.certs, "fe1"));
        assert!(e.contains("ca.pem") && e.contains("cannot read"), "{e}");
        certs_init(&c, false).unwrap();

        // Another node's certificate under this node's name.
        let fe1 = std::fs::read(c.certs.join("fe1.pem")).unwrap();
        std::fs::copy(c.certs.join("db1.pem"), c.certs.join("fe1.pem")).unwrap();
        let e = said(TlsLink::for_node(&c.certs, "fe1"));
        assert!(
            e.contains("fe1.pem") && e.contains("not a certificate for node \"fe1\""),
            "{e}"
        );

        // The matching certificate, the wrong key.
        std::fs::write(c.certs.join("fe1.pem"), fe1).unwrap();
        TlsLink::for_node(&c.certs, "fe1").unwrap();
        std::fs::copy(c.certs.join("db1.key"), c.certs.join("fe1.key")).unwrap();
        let e = said(TlsLink::for_node(&c.certs, "fe1"));
        assert!(e.contains("fe1.key") && e.contains("not the key of"), "{e}");

        // A certificate of another CA.
        let (_other, o) = with_certs();
        std::fs::copy(o.certs.join("db1.pem"), c.certs.join("db1.pem")).unwrap();
        let e = said(TlsLink::for_node(&c.certs, "db1"));
        assert!(e.contains("db1.pem") && e.contains("ca.pem"), "{e}");

        std::fs::write(c.certs.join("db1.key"), "not a key").unwrap();
        std::fs::copy(o.certs.join("ca.pem"), c.certs.join("ca.pem")).unwrap();
        let e = said(TlsLink::for_node(&c.certs, "db1"));
        assert!(e.contains("db1.key") && e.contains("no private key"), "{e}");

        std::fs::write(c.certs.join("ca.pem"), "").unwrap();
        let e = said(Credential::load(&c.certs, &users_dir(&c.certs), OPERATOR));
        assert!(e.contains("ca.pem") && e.contains("no certificate"), "{e}");
    }

    #[test]
    fn the_peer_is_read_from_the_certificate() {
        let (_dir, c) = with_certs();
        for node in ["fe1", "arch_1", "db1"] {
            let cert = load_certs(&c.certs.join(format!("{node}.pem"))).unwrap();
            assert_eq!(
                certificate_identity(&cert[0]).unwrap(),
                PeerIdentity::Node(node.into())
            );
        }
        for (user, role) in [(OPERATOR, Role::Operator), (AUDITOR, Role::Auditor)] {
            let cert = load_certs(&user_files(&users_dir(&c.certs), user).0).unwrap();
            assert_eq!(
                certificate_identity(&cert[0]).unwrap(),
                PeerIdentity::Client(Principal::new(user, role))
            );
        }

        // Two names: not a node certificate.
        let key = KeyPair::generate().unwrap();
        let mut p = node_params("fe1").unwrap();
        p.subject_alt_names
            .push(SanType::DnsName("fe2".try_into().unwrap()));
        let two = p.self_signed(&key).unwrap();
        assert!(certificate_identity(two.der()).is_err());
        // A node name and a principal: neither.
        let mut p = node_params("fe1").unwrap();
        p.subject_alt_names.push(SanType::URI(
            Principal::new("a", Role::User).uri().try_into().unwrap(),
        ));
        assert!(certificate_identity(p.self_signed(&key).unwrap().der()).is_err());
        // A URI that names no principal.
        let mut p = user_params(&Principal::new("a", Role::User)).unwrap();
        p.subject_alt_names = vec![SanType::URI("urn:holdfast:root:a".try_into().unwrap())];
        assert!(certificate_identity(p.self_signed(&key).unwrap().der()).is_err());

        // Truncated DER is malformed, not a panic.
        let cert = load_certs(&c.certs.join("fe1.pem")).unwrap();
        for cut in [0, 1, 10, cert[0].len() / 2] {
            assert!(certificate_identity(&CertificateDer::from(&cert[0][..cut])).is_err());
        }
    }

    #[test]
    fn a_user_credential_is_checked_when_it_is_loaded() {
        let (_dir, c) = with_certs();
        let users = users_dir(&c.certs);
        let carol = Principal::new("carol@corp.example", Role::Auditor);
        let written = issue_user(&c.certs, &users, &carol, false).unwrap();
        assert_eq!(
            names(&written),
            ["carol@corp.example.key", "carol@corp.example.pem"]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&users), 0o700);
            assert_eq!(mode(&users.join("carol@corp.example.key")), 0o600);
        }
        let cred = Credential::load(&c.certs, &users, "carol@corp.example").unwrap();
        assert_eq!(cred.principal, carol);
        // Kept unless forced.
        let e = issue_user(&c.certs, &users, &carol, false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        issue_user(&c.certs, &users, &carol, true).unwrap();

        // Missing: says how to make one.
        let e = said(Credential::load(&c.certs, &users, "dave@corp.example"));
        assert!(e.contains("holdfast certs user dave@corp.example"), "{e}");
        // Renamed: the file does not name the user it is for.
        std::fs::copy(users.join("carol@corp.example.pem"), users.join("eve.pem")).unwrap();
        std::fs::copy(users.join("carol@corp.example.key"), users.join("eve.key")).unwrap();
        let e = said(Credential::load(&c.certs, &users, "eve"));
        assert!(e.contains("not eve"), "{e}");
        // A node's certificate is not a credential.
        std::fs::copy(c.certs.join("fe1.pem"), users.join("fe1.pem")).unwrap();
        std::fs::copy(c.certs.join("fe1.key"), users.join("fe1.key")).unwrap();
        let e = said(Credential::load(&c.certs, &users, "fe1"));
        assert!(e.contains("not a user credential"), "{e}");
        // Another cluster's credential is refused.
        let (_other_dir, o) = with_certs();
        let e = said(Credential::load(&c.certs, &users_dir(&o.certs), OPERATOR));
        assert!(e.contains("not a valid credential of the CA"), "{e}");
        // Names that cannot be principals are refused before any file.
        for bad in ["", "a/b", "../x", "a b", ".hidden"] {
            assert!(matches!(
                issue_user(&c.certs, &users, &Principal::new(bad, Role::User), false),
                Err(TlsError::BadUser { .. })
            ));
        }
    }
}
