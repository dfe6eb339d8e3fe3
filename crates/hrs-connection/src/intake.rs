//! The way to the intake, shared by the connection point's update checks and the
//! connection tool's `connect`: how to reach it (URL, TLS, token) and the three calls it
//! answers.

use std::path::Path;
use std::time::Duration;

use hrs_core::token::Token;
use hrs_proto::v1 as pb;
use hrs_rpc::chunks::ChunkedPushError;
use hrs_rpc::tls::{ClientTls, TlsError};
use hrs_rpc::v1::intake_client::IntakeClient;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use tonic::transport::Channel;

use crate::MAX_MESSAGE_BYTES;

/// How long to wait for the intake to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one call may take; a stream of chunks it cuts off resumes at the next
/// attempt where the intake's held bytes end.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Where the intake is and how to prove who is calling.
#[derive(Debug, Clone)]
pub struct IntakeLink {
    /// The intake's URL.
    pub url: String,
    /// TLS to an `https://` intake.
    pub tls: Option<ClientTls>,
    /// The hierarchy's token, for a caller without a client certificate.
    pub token: Option<Token>,
    /// An HTTP proxy to reach it through.
    pub proxy: Option<hrs_rpc::proxy::Proxy>,
}

/// Why a call to the intake failed.
#[derive(Debug, thiserror::Error)]
pub enum IntakeCallError {
    /// The intake could not be reached (or TLS to it could not be set up).
    #[error("the intake at {url} cannot be reached: {cause}")]
    Unreachable {
        /// The intake's URL.
        url: String,
        /// What failed, with its causes.
        cause: String,
    },
    /// The intake answered with an error.
    #[error("the intake refused: {}", .0.message())]
    Refused(tonic::Status),
    /// A downloaded package is not what the manifest says.
    #[error("package {name} downloaded with SHA-256 {actual}, the manifest says {expected}")]
    Corrupt {
        /// The package.
        name: String,
        /// What the manifest says.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// A stored period could not be read or reshaped to be sent.
    #[error("cannot read the period to send it: {0}")]
    Source(String),
    /// A downloaded package could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl IntakeCallError {
    /// True when nothing is wrong with what was sent: trying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Refused(status) => !hrs_rpc::error::refused(status),
            // The store is read again at the next check.
            Self::Source(_) => true,
            Self::Corrupt { .. } | Self::Io { .. } => false,
        }
    }
}

/// An open connection to the intake.
#[derive(Debug, Clone)]
pub struct IntakeSession {
    client: IntakeClient<Channel>,
    channel: Channel,
    token: Option<Token>,
}

impl IntakeLink {
    /// Connects to the intake.
    pub async fn connect(&self) -> Result<IntakeSession, IntakeCallError> {
        let unreachable = |cause: String| IntakeCallError::Unreachable {
            url: self.url.clone(),
            cause,
        };
        let endpoint = hrs_rpc::tls::endpoint_with(&self.url, self.tls.as_ref())
            .map_err(|e: TlsError| unreachable(hrs_core::error::chain(&e)))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        let channel = hrs_rpc::proxy::connect(endpoint, self.proxy.as_ref())
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(IntakeSession {
            client: IntakeClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            channel,
            token: self.token.clone(),
        })
    }
}

impl IntakeSession {
    /// A request carrying the token, when there is one.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        with_token(tonic::Request::new(message), self.token.as_ref())
    }

    /// Submits one period, as it leaves the hierarchy, in chunks of its encoding `source`:
    /// resumed where the intake's held bytes end, answered once the intake committed it.
    pub async fn submit_chunks(
        &mut self,
        offer: pb::PeriodOffer,
        source: std::sync::Arc<dyn hrs_core::bytes::RunBytes>,
    ) -> Result<pb::SubmitResponse, IntakeCallError> {
        let token = self.token.clone();
        let mut client = IntakeClient::with_interceptor(
            self.channel.clone(),
            move |request: tonic::Request<()>| Ok(with_token(request, token.as_ref())),
        );
        let offer = pb::PeriodOffer {
            client_version: hrs_core::VERSION.to_owned(),
            ..offer
        };
        hrs_rpc::submit::submit_period_chunks(
            &mut client,
            offer,
            source,
            hrs_rpc::chunks::DEFAULT_CHUNK_BYTES,
        )
        .await
        .map_err(|error| match error {
            ChunkedPushError::Status(status) => IntakeCallError::Refused(status),
            other => IntakeCallError::Source(other.to_string()),
        })
    }

    /// Asks which updates apply to `hierarchy_hash`, filtered by `download`.
    pub async fn check_updates(
        &mut self,
        hierarchy_hash: &str,
        download: &str,
    ) -> Result<pb::UpdateManifest, IntakeCallError> {
        let request = self.request(pb::CheckUpdatesRequest {
            hierarchy_hash: hierarchy_hash.to_owned(),
            client_version: hrs_core::VERSION.to_owned(),
            download: download.to_owned(),
        });
        self.client
            .check_updates(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(IntakeCallError::Refused)
    }

    /// Downloads one package to `dest`, checking its SHA-256 against the manifest's;
    /// `progress` is told the bytes received so far. The file appears only when whole.
    pub async fn download(
        &mut self,
        hierarchy_hash: &str,
        update: &pb::Update,
        package: &pb::Package,
        dest: &Path,
        mut progress: impl FnMut(u64),
    ) -> Result<(), IntakeCallError> {
        let io = |source| IntakeCallError::Io {
            path: dest.to_owned(),
            source,
        };
        let request = self.request(pb::DownloadPackageRequest {
            hierarchy_hash: hierarchy_hash.to_owned(),
            update_id: update.id.clone(),
            name: package.name.clone(),
        });
        let mut stream = self
            .client
            .download_package(request)
            .await
            .map_err(IntakeCallError::Refused)?
            .into_inner();
        let partial = dest.with_extension("partial");
        let mut file = tokio::fs::File::create(&partial).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        while let Some(chunk) = stream.message().await.map_err(IntakeCallError::Refused)? {
            hasher.update(&chunk.data);
            file.write_all(&chunk.data).await.map_err(io)?;
            received += chunk.data.len() as u64;
            progress(received);
        }
        file.sync_all().await.map_err(io)?;
        drop(file);
        let actual: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if actual != package.sha256 || received != package.size {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(IntakeCallError::Corrupt {
                name: package.name.clone(),
                expected: package.sha256.clone(),
                actual,
            });
        }
        tokio::fs::rename(&partial, dest).await.map_err(io)
    }
}

/// `request` with the hierarchy's token, when there is one.
fn with_token<T>(mut request: tonic::Request<T>, token: Option<&Token>) -> tonic::Request<T> {
    if let Some(token) = token
        && let Ok(value) = format!("Bearer {}", token.expose()).parse()
    {
        // A token is visible ASCII (checked when it was read), so it always parses.
        request.metadata_mut().insert("authorization", value);
    }
    request
}
