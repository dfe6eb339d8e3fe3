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
        Ok(ServerTlsConfig::new()
            .identity(self.identity()?)
            .client_ca_root(Certificate::from_pem(read(&self.ca)?))
            .client_auth_optional(false))
    }

    /// The client side: this role's certificate, and the CA the server must be signed by.
    pub fn client(&self) -> Result<ClientTlsConfig, TlsError> {
        Ok(ClientTlsConfig::new()
            .identity(self.identity()?)
            .ca_certificate(Certificate::from_pem(read(&self.ca)?)))
    }
}

/// The endpoint of a role at `url`: `https://` with TLS (the server must present a
/// certificate from the CA naming the URL's host), `http://` without.
pub fn endpoint(url: &str, tls: Option<&TlsFiles>) -> Result<Endpoint, TlsError> {
    let endpoint = Endpoint::from_shared(url.to_owned())?;
    Ok(match tls {
        Some(tls) => endpoint.tls_config(tls.client()?)?,
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
