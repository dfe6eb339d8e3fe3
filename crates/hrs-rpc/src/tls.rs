//! TLS between roles: a server presents its certificate and requires one from every
//! client, signed by the hierarchy's CA (mutual TLS); a client presents its own and trusts
//! that CA only. One crypto provider throughout: rustls with aws-lc-rs.

use std::path::{Path, PathBuf};

pub use hrs_core::config::TlsFiles;

use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The transport refused the certificates or the address.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn identity(files: &TlsFiles) -> Result<Identity, TlsError> {
    Ok(Identity::from_pem(read(&files.cert)?, read(&files.key)?))
}

/// The server side of a role's TLS files: its certificate, and a client certificate from
/// the CA required of every caller, or only verified when given.
pub fn server(files: &TlsFiles, clients: ClientCertificates) -> Result<ServerTlsConfig, TlsError> {
    Ok(ServerTlsConfig::new()
        .identity(identity(files)?)
        .client_ca_root(Certificate::from_pem(read(&files.ca)?))
        .client_auth_optional(clients == ClientCertificates::Optional))
}

impl From<&TlsFiles> for ClientTls {
    fn from(files: &TlsFiles) -> Self {
        Self {
            ca: files.ca.clone(),
            identity: Some((files.cert.clone(), files.key.clone())),
        }
    }
}

/// Whether a server requires a certificate of every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertificates {
    /// Every client presents one from the CA (mutual TLS).
    Required,
    /// A client may connect without one and authenticate otherwise (the intake's token);
    /// a certificate it does present must still come from the CA.
    Optional,
}

/// How a client verifies a server it reaches over TLS, and whether it presents a
/// certificate of its own: the connection point's way to an intake that may accept a
/// token instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA the server's certificate must come from (PEM).
    pub ca: PathBuf,
    /// This client's certificate and key (PEM), when it has them.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    /// The client side of these settings.
    pub fn config(&self) -> Result<ClientTlsConfig, TlsError> {
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&self.ca)?));
        Ok(match &self.identity {
            Some((cert, key)) => config.identity(Identity::from_pem(read(cert)?, read(key)?)),
            None => config,
        })
    }
}

/// The endpoint of a role at `url`: `https://` with TLS (the server must present a
/// certificate from the CA naming the URL's host), `http://` without.
pub fn endpoint(url: &str, tls: Option<&TlsFiles>) -> Result<Endpoint, TlsError> {
    endpoint_with(url, tls.map(ClientTls::from).as_ref())
}

/// The endpoint at `url` reached with `tls` when given; see [`ClientTls`].
pub fn endpoint_with(url: &str, tls: Option<&ClientTls>) -> Result<Endpoint, TlsError> {
    let endpoint = Endpoint::from_shared(url.to_owned())?;
    Ok(match tls {
        Some(tls) => endpoint.tls_config(tls.config()?)?,
        None => endpoint,
    })
}

/// Connects to a role at `url`; see [`endpoint`].
pub async fn connect(url: &str, tls: Option<&TlsFiles>) -> Result<Channel, TlsError> {
    Ok(endpoint(url, tls)?.connect().await?)
}

/// The certificate a client presented (its leaf, DER), when it connected over TLS.
pub fn peer_certificate<T>(request: &tonic::Request<T>) -> Option<Vec<u8>> {
    request
        .peer_certs()
        .and_then(|certs| certs.first().map(|cert| cert.as_ref().to_vec()))
}
