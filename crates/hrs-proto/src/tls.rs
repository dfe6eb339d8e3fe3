//! TLS between roles: a server presents its certificate and requires one from every
//! client, signed by the hierarchy's CA (mutual TLS); a client presents its own and trusts
//! that CA only. One crypto provider throughout: rustls with aws-lc-rs.

use std::path::{Path, PathBuf};

use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};

/// A role's certificate, its key, and the CA it trusts: the three `tls_*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This role's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The hierarchy's CA certificate (PEM).
    pub ca: PathBuf,
}

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

impl TlsFiles {
    /// Takes a role's three optional settings: all three make TLS, none means plaintext;
    /// anything else names the first missing setting.
    pub fn from_settings(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
    ) -> Result<Option<Self>, &'static str> {
        match (cert, key, ca) {
            (Some(cert), Some(key), Some(ca)) => Ok(Some(Self {
                cert: cert.to_owned(),
                key: key.to_owned(),
                ca: ca.to_owned(),
            })),
            (None, None, None) => Ok(None),
            (None, _, _) => Err("tls_cert"),
            (_, None, _) => Err("tls_key"),
            (_, _, None) => Err("tls_ca"),
        }
    }

    /// The TLS files of settings already checked by [`TlsFiles::from_settings`].
    pub fn of(cert: Option<&Path>, key: Option<&Path>, ca: Option<&Path>) -> Option<Self> {
        Self::from_settings(cert, key, ca).ok().flatten()
    }

    fn identity(&self) -> Result<Identity, TlsError> {
        Ok(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
    }

    /// The server side: this role's certificate, and a client certificate from the CA
    /// required of every caller.
    pub fn server(&self) -> Result<ServerTlsConfig, TlsError> {
        self.server_with(ClientCertificates::Required)
    }

    /// The server side, with client certificates required or only verified when given.
    pub fn server_with(&self, clients: ClientCertificates) -> Result<ServerTlsConfig, TlsError> {
        Ok(ServerTlsConfig::new()
            .identity(self.identity()?)
            .client_ca_root(Certificate::from_pem(read(&self.ca)?))
            .client_auth_optional(clients == ClientCertificates::Optional))
    }

    /// The client side: this role's certificate, and the CA the server must be signed by.
    pub fn client(&self) -> Result<ClientTlsConfig, TlsError> {
        ClientTls::from(self).config()
    }
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
