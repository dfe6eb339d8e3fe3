//! The two figures every HRS figure is read against, measured on the same bytes: (a) the
//! storage limit, the bytes written into SQLite as the roles open their stores, in one
//! transaction; (b) the network limit, the bytes copied over a mutual-TLS connection on
//! loopback with the roles' certificates and crypto provider.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

/// Size of the pieces the bytes are written in, to SQLite and to the TLS connection.
const PIECE_BYTES: usize = 4 << 20;

/// One table of pieces, as a role stages an upload: the store is opened by the roles' own
/// code, so it has their journal mode and synchronous setting.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS pieces (
    file   INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    data   BLOB NOT NULL,
    PRIMARY KEY (file, offset)
);";

/// Writes `files` into a new SQLite store at `path` in one transaction, committed; returns
/// the bytes written and how long it took, commit included.
pub(crate) async fn sqlite(path: &Path, files: &[PathBuf]) -> anyhow::Result<(u64, Duration)> {
    let store = hrs_store::Store::open(path, SCHEMA)?;
    let files = files.to_vec();
    let started = Instant::now();
    // Reading a file fails outside SQLite: kept apart, so the transaction rolls back.
    let written = store
        .call(move |conn| {
            let tx = conn.transaction()?;
            let mut total = 0u64;
            let mut piece = vec![0u8; PIECE_BYTES];
            for (n, file) in (0i64..).zip(&files) {
                let mut source = match std::fs::File::open(file) {
                    Ok(source) => source,
                    Err(error) => return Ok(Err((file.clone(), error))),
                };
                let mut offset = 0i64;
                loop {
                    let len = match read_full(&mut source, &mut piece) {
                        Ok(0) => break,
                        Ok(len) => len,
                        Err(error) => return Ok(Err((file.clone(), error))),
                    };
                    tx.execute(
                        "INSERT INTO pieces (file, offset, data) VALUES (?1, ?2, ?3)",
                        (n, offset, &piece[..len]),
                    )?;
                    offset += len as i64;
                    total += len as u64;
                }
            }
            tx.commit()?;
            Ok(Ok(total))
        })
        .await?;
    let elapsed = started.elapsed();
    let bytes = written.map_err(|(file, error)| {
        anyhow::Error::new(error).context(format!("cannot read {}", file.display()))
    })?;
    Ok((bytes, elapsed))
}

/// Copies `files` from a client to a server over mutual TLS on loopback, in pieces of
/// [`PIECE_BYTES`]; returns the bytes the server read and how long it took from connecting
/// until the server had read the last of them.
pub(crate) async fn tls_copy(pki: &Path, files: &[PathBuf]) -> anyhow::Result<(u64, Duration)> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certificates(&pki.join("ca.pem"))? {
        roots.add(ca)?;
    }
    let roots = Arc::new(roots);
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
            .build()?;
    let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certificates(&pki.join("aggregator.pem"))?,
            key(&pki.join("aggregator.key"))?,
        )?;
    let (site_cert, site_key) = site_identity(pki)?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certificates(&site_cert)?, key(&site_key)?)?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let receiver = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut buffer = vec![0u8; 1 << 20];
        let mut received = 0u64;
        loop {
            let n = tls.read(&mut buffer).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>((received, Instant::now()));
            }
            received += n as u64;
        }
    });

    let started = Instant::now();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await
        .context("the TLS handshake failed")?;
    let mut piece = vec![0u8; PIECE_BYTES];
    for file in files {
        let mut source = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("cannot read {}", file.display()))?;
        loop {
            let len = fill(&mut source, &mut piece).await?;
            if len == 0 {
                break;
            }
            tls.write_all(&piece[..len]).await?;
        }
    }
    tls.shutdown().await?;
    let (received, finished) = receiver.await??;
    Ok((received, finished - started))
}

/// The certificate and key of the first site in the PKI folder: the client side of (b).
fn site_identity(pki: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut certs: Vec<PathBuf> = std::fs::read_dir(pki)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("site-") && n.ends_with(".pem"))
        })
        .collect();
    certs.sort();
    let cert = certs
        .into_iter()
        .next()
        .with_context(|| format!("no site certificate in {}", pki.display()))?;
    Ok((cert.clone(), cert.with_extension("key")))
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", path.display()))
}

fn key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Reads until `buffer` is full or the file ends; returns how much was read.
fn read_full(source: &mut std::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match source.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// [`read_full`] for a file read through tokio.
async fn fill(source: &mut tokio::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match source.read(&mut buffer[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
