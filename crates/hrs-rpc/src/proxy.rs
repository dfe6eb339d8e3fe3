//! Reaching a server through an HTTP proxy: the connection point and the connection tool
//! often sit where the only way out is a proxy that opens tunnels with `CONNECT`, with or
//! without a user and password (Basic authentication).
//!
//! The tunnel carries exactly the bytes a direct connection would. TLS configured on the
//! [`Endpoint`] runs on top of it, end to end with the server and naming the server's host
//! (never the proxy's), so the proxy sees only the target's host and port. The proxy
//! itself is spoken to in plain HTTP (`http://host:port`): its credentials cross the local
//! network in clear, as with every Basic-authenticating proxy.
//!
//! [`connect`] is the one call: it answers the same [`Channel`] as
//! [`Endpoint::connect`], and a typed [`ProxyError`] that says what to do.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use hyper_util::rt::TokioIo;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use hrs_core::error::chain;
use hrs_core::secret::PasswordError;
use hrs_core::secret::PasswordSource;

/// The longest answer head read from a proxy: a proxy that sends more is not one.
pub const MAX_ANSWER_HEAD: usize = 8 * 1024;

/// How long reaching the proxy, and then its answer to `CONNECT`, may each take, so a
/// silent proxy fails the attempt instead of holding it for ever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// The longest part of a proxy's status line repeated in an error, since it comes from
/// the network and ends up in logs.
const MAX_STATUS_SHOWN: usize = 200;

/// An HTTP proxy to open tunnels through, with its credentials when it asks for some.
#[derive(Clone)]
pub struct Proxy {
    /// The proxy as `http://host:port`, for messages (never with credentials).
    url: String,
    /// `host:port`, to open TCP to.
    address: String,
    /// The user for Basic authentication, when the proxy asks for one.
    user: Option<String>,
    /// That user's password; kept out of `Debug` and of every error.
    password: Option<SecretString>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// Why proxy settings are unusable; never carries the password.
#[derive(Debug, thiserror::Error)]
pub enum ProxySettingsError {
    /// The URL is not `http://host:port`.
    #[error("proxy {url:?} is not of the form http://host:port: {reason}")]
    Invalid {
        /// The URL, without any credentials it held.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The URL names another scheme than `http`, e.g. an `https://` proxy.
    #[error(
        "proxy {url:?}: {scheme}:// proxies are not supported; give the proxy as \
         http://host:port (TLS to the intake still runs end to end through the tunnel)"
    )]
    Scheme {
        /// The URL, without any credentials it held.
        url: String,
        /// The scheme given.
        scheme: String,
    },
    /// The URL carries a user or password, which would end up in logs.
    #[error(
        "proxy {url:?} carries credentials in the URL: give the proxy user and its password \
         as their own settings instead"
    )]
    CredentialsInUrl {
        /// The URL, with its credentials replaced by `***`.
        url: String,
    },
    /// The user cannot be sent in Basic authentication.
    #[error("the proxy user {user:?} is not usable: {reason}")]
    User {
        /// The user given.
        user: String,
        /// Why not.
        reason: &'static str,
    },
    /// A user is given without a password.
    #[error("the proxy user {user:?} is given without a password")]
    UserWithoutPassword {
        /// The user given.
        user: String,
    },
    /// A password is given without a user.
    #[error("a proxy password ({from}) is given without a proxy user")]
    PasswordWithoutUser {
        /// Where the password was to come from.
        from: PasswordSource,
    },
    /// The password could not be read.
    #[error("the proxy password: {0}")]
    Password(#[source] PasswordError),
}

impl Proxy {
    /// Takes a proxy URL, `http://host:port`; refuses anything else with the reason, and
    /// credentials in the URL (they belong in their own settings, out of logs).
    pub fn new(url: &str) -> Result<Self, ProxySettingsError> {
        let shown = redact(url);
        let invalid = |reason| ProxySettingsError::Invalid {
            url: shown.clone(),
            reason,
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| invalid("not a URL, e.g. http://proxy.example.com:3128"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(scheme) => {
                return Err(ProxySettingsError::Scheme {
                    url: shown,
                    scheme: scheme.to_owned(),
                });
            }
            None => return Err(invalid("no http:// before the host")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(ProxySettingsError::CredentialsInUrl { url: shown });
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = match authority.port_u16() {
            Some(0) => return Err(invalid("port 0")),
            Some(port) => port,
            // `Uri` drops a port that does not fit in 16 bits rather than refusing it.
            None if authority.as_str().len() > host.len() => {
                return Err(invalid("a port is from 1 to 65535"));
            }
            // Proxies have no usual port (3128, 8080, ...): guessing one would only fail later.
            None => return Err(invalid("no port, e.g. http://proxy.example.com:3128")),
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("a proxy URL has no path or query"));
        }
        Ok(Self {
            url: format!("http://{host}:{port}"),
            address: format!("{host}:{port}"),
            user: None,
            password: None,
        })
    }

    /// Adds the user and password sent to the proxy (Basic authentication).
    pub fn with_credentials(
        self,
        user: &str,
        password: SecretString,
    ) -> Result<Self, ProxySettingsError> {
        let refuse = |reason| ProxySettingsError::User {
            user: user.to_owned(),
            reason,
        };
        if user.is_empty() {
            return Err(refuse("it is empty"));
        }
        // Basic authentication joins user and password with a colon (RFC 7617).
        if user.contains(':') {
            return Err(refuse("it contains a colon"));
        }
        if user.chars().any(char::is_control) {
            return Err(refuse("it contains a control character"));
        }
        Ok(Self {
            user: Some(user.to_owned()),
            password: Some(password),
            ..self
        })
    }

    /// Takes a role's proxy settings: the URL, the user when the proxy asks for one, and
    /// where its password comes from; the environment is the process's.
    pub fn from_settings(
        url: &str,
        user: Option<&str>,
        password: Option<&PasswordSource>,
    ) -> Result<Self, ProxySettingsError> {
        Self::from_settings_with(url, user, password, |name| std::env::var(name).ok())
    }

    /// Takes proxy settings as [`Proxy::from_settings`] does, reading environment variables
    /// through `env` (so tests need not change the process's environment).
    pub fn from_settings_with(
        url: &str,
        user: Option<&str>,
        password: Option<&PasswordSource>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ProxySettingsError> {
        let proxy = Self::new(url)?;
        match (user, password) {
            (None, None) => Ok(proxy),
            (Some(user), None) => Err(ProxySettingsError::UserWithoutPassword {
                user: user.to_owned(),
            }),
            (None, Some(from)) => {
                Err(ProxySettingsError::PasswordWithoutUser { from: from.clone() })
            }
            (Some(user), Some(from)) => proxy.with_credentials(
                user,
                from.read_with(env).map_err(ProxySettingsError::Password)?,
            ),
        }
    }

    /// The proxy as `http://host:port`, for messages and logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The user sent to the proxy, when one is set.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The connector for [`Endpoint::connect_with_connector`] (or its lazy twin) that
    /// tunnels through this proxy; [`connect`] uses it.
    pub fn connector(&self) -> ProxyConnector {
        ProxyConnector {
            proxy: Arc::new(self.clone()),
        }
    }

    /// The `Proxy-Authorization` value, when credentials are set.
    fn authorization(&self) -> Option<Zeroizing<String>> {
        let (user, password) = (self.user.as_ref()?, self.password.as_ref()?);
        let joined = Zeroizing::new(format!("{user}:{}", password.expose_secret()));
        let mut value = Zeroizing::new(String::from("Basic "));
        base64::engine::general_purpose::STANDARD.encode_string(joined.as_bytes(), &mut value);
        Some(value)
    }
}

/// A URL as it may be shown: any `user:password@` replaced by `***@`.
fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("***{}", &authority[at..]),
        None => authority.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// Why a connection through a proxy (or a direct one) failed, and what to do about it;
/// never carries the password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    /// The endpoint names no host to open a tunnel to.
    #[error("the endpoint {endpoint} names no host to open a tunnel to")]
    NoTarget {
        /// The endpoint's URI.
        endpoint: String,
    },
    /// TCP to the proxy failed.
    #[error(
        "cannot reach the proxy at {proxy}: {cause}; check the proxy setting and that the proxy \
         is running"
    )]
    Unreachable {
        /// The proxy's URL.
        proxy: String,
        /// The cause.
        cause: Arc<io::Error>,
    },
    /// The connection to the proxy failed while asking for the tunnel.
    #[error("the connection to the proxy at {proxy} failed during CONNECT: {cause}")]
    Handshake {
        /// The proxy's URL.
        proxy: String,
        /// The cause.
        cause: Arc<io::Error>,
    },
    /// The proxy did not answer `CONNECT` in time.
    #[error(
        "the proxy at {proxy} did not answer CONNECT within {seconds} s; check that it is an \
         HTTP proxy"
    )]
    Timeout {
        /// The proxy's URL.
        proxy: String,
        /// How long it was given.
        seconds: u64,
    },
    /// The proxy's answer is not HTTP.
    #[error(
        "the proxy at {proxy} answered CONNECT with something else than HTTP ({reason}); check \
         that it is an HTTP proxy"
    )]
    Malformed {
        /// The proxy's URL.
        proxy: String,
        /// What was wrong.
        reason: String,
    },
    /// The proxy asks for credentials and none are set (407).
    #[error(
        "the proxy at {proxy} requires authentication: give the proxy user and its password (it \
         answered {status:?})"
    )]
    AuthenticationRequired {
        /// The proxy's URL.
        proxy: String,
        /// Its status line.
        status: String,
    },
    /// The proxy refused the credentials given (407).
    #[error(
        "the proxy at {proxy} refused the credentials of user {user:?}: check the proxy user and \
         its password (it answered {status:?})"
    )]
    CredentialsRefused {
        /// The proxy's URL.
        proxy: String,
        /// The user sent.
        user: String,
        /// Its status line.
        status: String,
    },
    /// The proxy asks for an authentication scheme other than Basic (407).
    #[error(
        "the proxy at {proxy} asks for {schemes} authentication, and only Basic is supported: \
         ask for a proxy account with Basic authentication, or for this host to be let through \
         (it answered {status:?})"
    )]
    UnsupportedAuthentication {
        /// The proxy's URL.
        proxy: String,
        /// The schemes it offered, e.g. `Negotiate, NTLM`.
        schemes: String,
        /// Its status line.
        status: String,
    },
    /// The proxy refused a tunnel to the target (403, 405, ...).
    #[error(
        "the proxy at {proxy} refused a tunnel to {target} (it answered {status:?}): the proxy \
         must allow CONNECT to {target}"
    )]
    TargetRefused {
        /// The proxy's URL.
        proxy: String,
        /// The `host:port` asked for.
        target: String,
        /// Its status line.
        status: String,
    },
    /// The proxy could not reach the target (502, 503, 504).
    #[error(
        "the proxy at {proxy} could not reach {target} (it answered {status:?}): check the \
         address and that the proxy can reach it"
    )]
    TargetUnreachable {
        /// The proxy's URL.
        proxy: String,
        /// The `host:port` asked for.
        target: String,
        /// Its status line.
        status: String,
    },
    /// The connection failed otherwise: directly, or over the tunnel (TLS, HTTP/2).
    #[error("cannot connect to {endpoint}: {cause}")]
    Transport {
        /// The endpoint's URI.
        endpoint: String,
        /// The transport's error and its causes, on one line.
        cause: String,
    },
}

impl ProxyError {
    /// The error of a failed [`Endpoint`] connection: the proxy's, when it failed at the
    /// proxy (tonic keeps it among the causes), else the transport's with its causes.
    pub fn from_transport(endpoint: &Uri, error: &tonic::transport::Error) -> Self {
        match find(error) {
            Some(found) => found.clone(),
            None => Self::Transport {
                endpoint: endpoint.to_string(),
                cause: chain(error),
            },
        }
    }
}

/// Finds a proxy's error among the causes of `error`, e.g. of the `tonic::Status` of a
/// call whose channel failed to reconnect through the proxy (its message is then the
/// proxy error's text).
pub fn find<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a ProxyError> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(found) = error.downcast_ref::<ProxyError>() {
            return Some(found);
        }
        next = error.source();
    }
    None
}

/// Connects to `endpoint` through `proxy` when given, else directly: the same [`Channel`]
/// as [`Endpoint::connect`], with TLS configured on the endpoint running inside the tunnel.
pub async fn connect(endpoint: Endpoint, proxy: Option<&Proxy>) -> Result<Channel, ProxyError> {
    let connected = match proxy {
        Some(proxy) => endpoint.connect_with_connector(proxy.connector()).await,
        None => endpoint.connect().await,
    };
    connected.map_err(|error| ProxyError::from_transport(endpoint.uri(), &error))
}

/// A channel to `endpoint` through `proxy` when given, else direct, that connects on first
/// use (and reconnects through the proxy); failures surface in calls' `Status`, where
/// [`find`] tells a proxy's refusal apart.
pub fn connect_lazy(endpoint: &Endpoint, proxy: Option<&Proxy>) -> Channel {
    match proxy {
        Some(proxy) => endpoint.connect_with_connector_lazy(proxy.connector()),
        None => endpoint.connect_lazy(),
    }
}

/// A connection through a proxy's tunnel, as tonic's connector returns it: bytes the
/// proxy sent past its answer stay buffered for the caller.
pub type Tunnel = TokioIo<BufReader<TcpStream>>;

/// Opens a tunnel through a proxy to each URI tonic asks for: the connector of
/// [`Endpoint::connect_with_connector`].
#[derive(Debug, Clone)]
pub struct ProxyConnector {
    /// Shared by every connection attempt, so the secret is not copied for each.
    proxy: Arc<Proxy>,
}

impl tower_service::Service<Uri> for ProxyConnector {
    type Response = Tunnel;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Tunnel, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        let proxy = Arc::clone(&self.proxy);
        Box::pin(async move { open(&proxy, &target, HANDSHAKE_TIMEOUT).await })
    }
}

/// Opens TCP to the proxy and asks it for a tunnel to `target`'s host and port, giving
/// each step `timeout`.
async fn open(proxy: &Proxy, target: &Uri, timeout: Duration) -> Result<Tunnel, ProxyError> {
    let host = target
        .host()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| ProxyError::NoTarget {
            endpoint: target.to_string(),
        })?;
    let port = target
        .port_u16()
        .unwrap_or(if target.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    // `host` keeps an IPv6 address's brackets, as CONNECT wants them.
    let authority = format!("{host}:{port}");
    let unreachable = |cause| ProxyError::Unreachable {
        proxy: proxy.url.clone(),
        cause: Arc::new(cause),
    };
    let stream = tokio::time::timeout(timeout, TcpStream::connect(&proxy.address))
        .await
        .map_err(|_| {
            unreachable(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {} s", timeout.as_secs()),
            ))
        })?
        .map_err(unreachable)?;
    // As tonic's own connector: gRPC messages are small and latency matters.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY not set on the proxy connection");
    }
    // The buffer keeps whatever the proxy sends past its answer head: the tunnel's first
    // bytes.
    let mut stream = BufReader::with_capacity(MAX_ANSWER_HEAD, stream);
    tokio::time::timeout(timeout, handshake(proxy, &mut stream, &authority))
        .await
        .map_err(|_| ProxyError::Timeout {
            proxy: proxy.url.clone(),
            seconds: timeout.as_secs(),
        })??;
    tracing::debug!(proxy = %proxy.url, target = %authority, "tunnel open");
    Ok(TokioIo::new(stream))
}

/// Sends `CONNECT` for `target` and reads the proxy's answer; `Ok` once the tunnel is open.
async fn handshake(
    proxy: &Proxy,
    stream: &mut BufReader<TcpStream>,
    target: &str,
) -> Result<(), ProxyError> {
    let mut request = Zeroizing::new(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"));
    if let Some(authorization) = proxy.authorization() {
        request.push_str("Proxy-Authorization: ");
        request.push_str(&authorization);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let failed = |cause| ProxyError::Handshake {
        proxy: proxy.url.clone(),
        cause: Arc::new(cause),
    };
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .map_err(failed)?;
    let head = read_head(stream).await.map_err(|error| match error {
        HeadError::Io(cause) => failed(cause),
        HeadError::Malformed(reason) => ProxyError::Malformed {
            proxy: proxy.url.clone(),
            reason: reason.to_owned(),
        },
    })?;
    let answer = Answer::parse(&head).map_err(|reason| ProxyError::Malformed {
        proxy: proxy.url.clone(),
        reason,
    })?;
    let proxy_url = proxy.url.clone();
    let status = answer.status_line;
    match answer.code {
        // Any 2xx opens the tunnel (RFC 9110, section 9.3.6).
        200..=299 => Ok(()),
        407 if !answer.offers_basic && !answer.schemes.is_empty() => {
            Err(ProxyError::UnsupportedAuthentication {
                proxy: proxy_url,
                schemes: answer.schemes.join(", "),
                status,
            })
        }
        407 => Err(match &proxy.user {
            Some(user) => ProxyError::CredentialsRefused {
                proxy: proxy_url,
                user: user.clone(),
                status,
            },
            None => ProxyError::AuthenticationRequired {
                proxy: proxy_url,
                status,
            },
        }),
        502..=504 => Err(ProxyError::TargetUnreachable {
            proxy: proxy_url,
            target: target.to_owned(),
            status,
        }),
        _ => Err(ProxyError::TargetRefused {
            proxy: proxy_url,
            target: target.to_owned(),
            status,
        }),
    }
}

/// Why an answer head could not be read.
enum HeadError {
    Io(io::Error),
    Malformed(&'static str),
}

/// Reads an HTTP answer head, line by line, up to its empty line and at most
/// [`MAX_ANSWER_HEAD`] bytes; nothing past it is consumed.
async fn read_head(stream: &mut BufReader<TcpStream>) -> Result<Vec<String>, HeadError> {
    let mut limited = (&mut *stream).take(MAX_ANSWER_HEAD as u64);
    let mut lines = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        limited
            .read_until(b'\n', &mut line)
            .await
            .map_err(HeadError::Io)?;
        let Some(text) = line.strip_suffix(b"\n") else {
            return Err(HeadError::Malformed(if limited.limit() == 0 {
                "its answer head is longer than 8 KiB"
            } else if lines.is_empty() && line.is_empty() {
                "it closed the connection without answering"
            } else {
                "it closed the connection in the middle of its answer"
            }));
        };
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            if lines.is_empty() {
                // An empty line before the status line is tolerated (RFC 9112, section 2.2).
                continue;
            }
            return Ok(lines);
        }
        lines.push(String::from_utf8_lossy(text).into_owned());
    }
}

/// What a proxy answered to `CONNECT`.
#[derive(Debug)]
struct Answer {
    code: u16,
    /// The status line, safe to show.
    status_line: String,
    /// The authentication schemes of its `Proxy-Authenticate` headers.
    schemes: Vec<String>,
    /// Whether Basic is among them.
    offers_basic: bool,
}

impl Answer {
    fn parse(head: &[String]) -> Result<Self, String> {
        let (first, headers) = head
            .split_first()
            .ok_or_else(|| "an empty answer".to_owned())?;
        let status_line = printable(first);
        let mut parts = first.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(format!("its answer begins {status_line:?}"));
        }
        let code = parts
            .next()
            .filter(|code| code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| format!("no status code in {status_line:?}"))?;
        let schemes: Vec<String> = headers
            .iter()
            .filter_map(|line| line.split_once(':'))
            .filter(|(name, _)| name.trim().eq_ignore_ascii_case("proxy-authenticate"))
            .filter_map(|(_, value)| value.split_whitespace().next())
            .map(|scheme| printable(scheme.trim_end_matches(',')))
            .collect();
        let offers_basic = schemes
            .iter()
            .any(|scheme| scheme.eq_ignore_ascii_case("basic"));
        Ok(Self {
            code,
            status_line,
            schemes,
            offers_basic,
        })
    }
}

/// Text from the network made safe for a message: no control characters, bounded length.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_STATUS_SHOWN)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    use super::*;

    const PASSWORD: &str = "s3cret-Pa55";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn an_http_proxy_url_is_taken_and_anything_else_named() {
        let proxy = Proxy::new("http://proxy.example.com:3128").expect("valid");
        assert_eq!(proxy.url(), "http://proxy.example.com:3128");
        assert_eq!(proxy.address, "proxy.example.com:3128");
        assert_eq!(
            Proxy::new("http://[::1]:8080/").expect("v6").address,
            "[::1]:8080"
        );

        let err = Proxy::new("https://proxy.example.com:3128").expect_err("https");
        assert!(
            matches!(&err, ProxySettingsError::Scheme { scheme, .. } if scheme == "https"),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("https://proxy.example.com:3128"), "{text}");
        assert!(text.contains("http://host:port"), "{text}");
        assert!(matches!(
            Proxy::new("socks5://proxy:1080"),
            Err(ProxySettingsError::Scheme { .. })
        ));
        for (url, reason) in [
            ("http://proxy.example.com", "no port"),
            ("proxy.example.com:3128", "http://"),
            ("http://proxy:3128/path", "no path"),
            ("http://proxy:0", "port 0"),
            ("not a url", "not a URL"),
        ] {
            let err = Proxy::new(url).expect_err(url).to_string();
            assert!(err.contains(reason) && err.contains(url), "{url}: {err}");
        }
    }

    #[test]
    fn credentials_in_the_url_are_refused_without_repeating_them() {
        let err = Proxy::new(&format!("http://user:{PASSWORD}@proxy:3128"))
            .expect_err("credentials in the URL");
        assert!(matches!(err, ProxySettingsError::CredentialsInUrl { .. }));
        let text = err.to_string();
        assert!(text.contains("http://***@proxy:3128"), "{text}");
        assert!(!text.contains(PASSWORD) && !format!("{err:?}").contains(PASSWORD));
        let err = Proxy::new(&format!("https://user:{PASSWORD}@proxy:3128")).expect_err("https");
        assert!(!err.to_string().contains(PASSWORD), "{err}");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let proxy = Proxy::new("http://proxy:3128")
            .and_then(|proxy| proxy.with_credentials("hrs", SecretString::from(PASSWORD)))
            .expect("valid");
        let shown = format!("{proxy:?} {:?}", proxy.connector());
        assert!(!shown.contains(PASSWORD), "{shown}");
        assert!(
            shown.contains("hrs") && shown.contains("redacted"),
            "{shown}"
        );
    }

    #[test]
    fn the_authorization_is_basic_user_colon_password() {
        let proxy = Proxy::new("http://proxy:3128")
            .and_then(|proxy| proxy.with_credentials("user", SecretString::from("pass")))
            .expect("valid");
        assert_eq!(
            proxy.authorization().as_deref().map(String::as_str),
            Some("Basic dXNlcjpwYXNz")
        );
        assert!(
            Proxy::new("http://proxy:3128")
                .expect("valid")
                .authorization()
                .is_none()
        );
        for user in ["", "a:b", "a\nb"] {
            let err = Proxy::new("http://proxy:3128")
                .and_then(|proxy| proxy.with_credentials(user, SecretString::from("p")))
                .expect_err(user);
            assert!(matches!(err, ProxySettingsError::User { .. }), "{err:?}");
        }
    }

    #[test]
    fn settings_take_the_password_from_a_variable_or_a_one_line_file() {
        let url = "http://proxy:3128";
        let env = PasswordSource::Env("HRS_PROXY_PASSWORD".into());
        let proxy = Proxy::from_settings_with(url, Some("hrs"), Some(&env), |name| {
            (name == "HRS_PROXY_PASSWORD").then(|| PASSWORD.to_owned())
        })
        .expect("from the variable");
        assert_eq!(proxy.user(), Some("hrs"));
        assert_eq!(
            proxy.password.as_ref().map(ExposeSecret::expose_secret),
            Some(PASSWORD)
        );
        let err = Proxy::from_settings_with(url, Some("hrs"), Some(&env), no_env)
            .expect_err("unset variable");
        assert!(err.to_string().contains("HRS_PROXY_PASSWORD"), "{err}");

        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("proxy.password");
        std::fs::write(&file, format!("{PASSWORD}\r\n")).expect("writes");
        let from_file = PasswordSource::File(file.clone());
        let proxy = Proxy::from_settings_with(url, Some("hrs"), Some(&from_file), no_env)
            .expect("from the file");
        assert_eq!(
            proxy.password.as_ref().map(ExposeSecret::expose_secret),
            Some(PASSWORD)
        );
        std::fs::write(&file, format!("{PASSWORD}\nsecond line\n")).expect("writes");
        let err = Proxy::from_settings_with(url, Some("hrs"), Some(&from_file), no_env)
            .expect_err("two lines");
        assert!(
            matches!(
                err,
                ProxySettingsError::Password(PasswordError::Lines { .. })
            ),
            "{err:?}"
        );
        assert!(!err.to_string().contains(PASSWORD));
        std::fs::write(&file, "\n").expect("writes");
        let err = Proxy::from_settings_with(url, Some("hrs"), Some(&from_file), no_env)
            .expect_err("empty");
        assert!(
            matches!(
                err,
                ProxySettingsError::Password(PasswordError::Empty { .. })
            ),
            "{err:?}"
        );
        let missing = PasswordSource::File(dir.path().join("missing"));
        let err = Proxy::from_settings_with(url, Some("hrs"), Some(&missing), no_env)
            .expect_err("missing file");
        assert!(err.to_string().contains("missing"), "{err}");

        let err = Proxy::from_settings_with(url, Some("hrs"), None, no_env).expect_err("no pw");
        assert!(matches!(
            err,
            ProxySettingsError::UserWithoutPassword { .. }
        ));
        let err = Proxy::from_settings_with(url, None, Some(&env), no_env).expect_err("no user");
        assert!(matches!(
            err,
            ProxySettingsError::PasswordWithoutUser { .. }
        ));
        let proxy = Proxy::from_settings_with(url, None, None, no_env).expect("open proxy");
        assert!(proxy.user().is_none());
    }

    /// A fake proxy that reads one request head, answers `answer`, and hands back the
    /// request it read; it keeps the connection open until the client closes it.
    async fn answering(answer: &'static [u8]) -> (Proxy, JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accepts");
            let mut stream = BufReader::new(stream);
            let mut request = String::new();
            loop {
                let mut line = String::new();
                stream.read_line(&mut line).await.expect("reads");
                request.push_str(&line);
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            stream.get_mut().write_all(answer).await.expect("answers");
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
            request
        });
        let proxy = Proxy::new(&format!("http://{addr}")).expect("valid");
        (proxy, task)
    }

    async fn open_through(proxy: &Proxy, target: &str) -> Result<Tunnel, ProxyError> {
        let target: Uri = target.parse().expect("uri");
        open(proxy, &target, Duration::from_secs(10)).await
    }

    #[tokio::test]
    async fn connect_names_the_target_and_sends_basic_credentials() {
        let (proxy, request) = answering(b"HTTP/1.1 200 OK\r\n\r\n").await;
        let proxy = proxy
            .with_credentials("user", SecretString::from("pass"))
            .expect("valid");
        let tunnel = open_through(&proxy, "https://intake.example.com").await;
        drop(tunnel.expect("tunnel"));
        let request = request.await.expect("request");
        assert_eq!(
            request,
            "CONNECT intake.example.com:443 HTTP/1.1\r\nHost: intake.example.com:443\r\n\
             Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n"
        );
        let (proxy, request) = answering(b"HTTP/1.0 200 Connection established\r\n\r\n").await;
        drop(
            open_through(&proxy, "http://[::1]:7400")
                .await
                .expect("tunnel"),
        );
        assert_eq!(
            request.await.expect("request"),
            "CONNECT [::1]:7400 HTTP/1.1\r\nHost: [::1]:7400\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn bytes_past_the_answer_head_stay_in_the_tunnel() {
        let (proxy, _request) = answering(b"HTTP/1.1 200 OK\r\nVia: test\r\n\r\nfirst bytes").await;
        let mut tunnel = open_through(&proxy, "http://127.0.0.1:1")
            .await
            .expect("tunnel")
            .into_inner();
        let mut first = [0u8; 11];
        tunnel.read_exact(&mut first).await.expect("reads");
        assert_eq!(&first, b"first bytes");
    }

    #[tokio::test]
    async fn each_refusal_says_what_to_do() {
        let cases: [(&'static [u8], &str); 6] = [
            (
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n",
                "requires authentication: give the proxy user and its password",
            ),
            (
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Negotiate\r\nProxy-Authenticate: NTLM\r\n\r\n",
                "asks for Negotiate, NTLM authentication, and only Basic is supported",
            ),
            (
                b"HTTP/1.1 403 Forbidden by policy\r\n\r\n",
                "refused a tunnel to intake.example.com:443 (it answered \"HTTP/1.1 403 Forbidden by policy\")",
            ),
            (
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 5\r\n\r\nnope!",
                "could not reach intake.example.com:443 (it answered \"HTTP/1.1 502 Bad Gateway\")",
            ),
            (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "something else than HTTP"),
            (b"HTTP/1.1 2xx what\r\n\r\n", "no status code"),
        ];
        for (answer, expected) in cases {
            let (proxy, _request) = answering(answer).await;
            let err = open_through(&proxy, "https://intake.example.com")
                .await
                .expect_err("refused");
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[tokio::test]
    async fn refused_credentials_name_the_user_and_never_the_password() {
        let (proxy, _request) =
            answering(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await;
        let proxy = proxy
            .with_credentials("hrs", SecretString::from(PASSWORD))
            .expect("valid");
        let err = open_through(&proxy, "https://intake.example.com")
            .await
            .expect_err("refused");
        assert!(
            matches!(err, ProxyError::CredentialsRefused { .. }),
            "{err:?}"
        );
        let text = format!("{err} {err:?}");
        assert!(
            text.contains("refused the credentials of user \"hrs\""),
            "{text}"
        );
        assert!(!text.contains(PASSWORD), "{text}");
    }

    #[tokio::test]
    async fn a_proxy_that_closes_or_rambles_is_malformed() {
        // A "proxy" that hangs up at once.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accepts");
            drop(stream);
        });
        let proxy = Proxy::new(&format!("http://{addr}")).expect("valid");
        let err = open_through(&proxy, "http://127.0.0.1:1")
            .await
            .expect_err("closed");
        assert!(
            matches!(
                &err,
                ProxyError::Malformed { .. } | ProxyError::Handshake { .. }
            ),
            "{err:?}"
        );

        static LONG: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
            let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
            answer.extend(std::iter::repeat_n(b"X-Filler: yes\r\n", 1000).flatten());
            answer
        });
        let (proxy, _request) = answering(LONG.as_slice()).await;
        let err = open_through(&proxy, "http://127.0.0.1:1")
            .await
            .expect_err("long");
        assert!(err.to_string().contains("longer than 8 KiB"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_proxy_times_out_and_a_closed_port_is_unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        let silent = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accepts");
            let mut all = Vec::new();
            let _ = stream.read_to_end(&mut all).await;
        });
        let proxy = Proxy::new(&format!("http://{addr}")).expect("valid");
        let target: Uri = "http://127.0.0.1:1".parse().expect("uri");
        let err = open(&proxy, &target, Duration::from_millis(200))
            .await
            .expect_err("silent");
        assert!(matches!(err, ProxyError::Timeout { .. }), "{err:?}");
        silent.abort();

        let closed = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let proxy = Proxy::new(&format!("http://{addr}")).expect("valid");
        let err = open_through(&proxy, "http://127.0.0.1:1")
            .await
            .expect_err("closed");
        assert!(matches!(err, ProxyError::Unreachable { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot reach the proxy at http://{addr}: ")),
            "{err}"
        );
    }

    #[test]
    fn a_chain_says_each_cause_once_and_finds_the_proxys_error() {
        /// A wrapper that repeats its cause's message, as tonic's connect error does.
        #[derive(Debug)]
        struct Repeats(ProxyError);
        impl fmt::Display for Repeats {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl StdError for Repeats {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let wrapped = Repeats(ProxyError::Malformed {
            proxy: "http://p:1".into(),
            reason: "x".into(),
        });
        let text = chain(&wrapped);
        assert_eq!(text, wrapped.0.to_string());
        assert!(matches!(find(&wrapped), Some(ProxyError::Malformed { .. })));
        assert!(find(&io::Error::other("other")).is_none());
    }
}
