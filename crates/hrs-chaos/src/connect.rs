//! A loopback HTTP proxy that opens tunnels with `CONNECT`, for tests of the roles that
//! reach the intake through a proxy: it asks for Basic credentials when given some,
//! refuses any target off loopback (tests never leave the machine), and counts what it
//! did so a test can prove its traffic went through it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The longest request head read: a client that sends more is refused.
const MAX_HEAD: u64 = 8 * 1024;

/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a refused client's input is read and dropped before closing.
const LINGER_BYTES: usize = 64 * 1024;

/// How long a refused client's input is drained before closing.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections served at once; more are dropped, so a runaway test cannot exhaust the
/// machine.
const MAX_CONNECTIONS: usize = 256;

/// What the proxy has done, for tests.
#[derive(Debug, Default)]
pub struct ConnectCounters {
    /// Request heads read, whatever became of them.
    pub requests: AtomicU64,
    /// Tunnels opened (answered 200).
    pub tunnels: AtomicU64,
    /// Requests refused (407, 403, 405, 400 or 502).
    pub refused: AtomicU64,
}

/// What every connection needs to know.
struct Shared {
    /// `user:password` a client must send, when the proxy asks for credentials.
    credentials: Option<String>,
    counters: ConnectCounters,
}

/// A running CONNECT proxy on loopback; it stops when dropped or on [`ConnectProxy::stop`].
pub struct ConnectProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Accepts connections and owns every tunnel's task, so aborting it ends them all.
    task: JoinHandle<()>,
}

impl ConnectProxy {
    /// Starts a proxy on 127.0.0.1 (port 0) that requires `credentials` (user, password)
    /// when given, and opens tunnels to loopback targets only.
    pub async fn start(credentials: Option<(String, String)>) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            credentials: credentials.map(|(user, password)| format!("{user}:{password}")),
            counters: ConnectCounters::default(),
        });
        let accepting = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            // Dropped with this task, which aborts every tunnel still open.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { return };
                        if connections.len() >= MAX_CONNECTIONS {
                            tracing::warn!("connect proxy at its connection limit");
                            continue;
                        }
                        connections.spawn(serve(Arc::clone(&accepting), client));
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's URL, `http://127.0.0.1:port`, as a role's proxy setting.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the proxy has done so far.
    pub fn counters(&self) -> &ConnectCounters {
        &self.shared.counters
    }

    /// Tunnels opened so far.
    pub fn tunnels(&self) -> u64 {
        self.shared.counters.tunnels.load(Ordering::SeqCst)
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        self.shared.counters.refused.load(Ordering::SeqCst)
    }

    /// Stops the proxy: once this returns, its port is closed and every tunnel cut.
    pub async fn stop(mut self) {
        self.task.abort();
        // Cancelled is the expected end: what matters is that the task, which owns the
        // listener and every tunnel, is gone.
        let _ = (&mut self.task).await;
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request and answers it: a tunnel, or a refusal.
async fn serve(shared: Arc<Shared>, client: TcpStream) {
    let mut client = BufReader::new(client);
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok(head)) => head,
        Ok(Err(Unread::BadRequest)) => {
            shared.counters.requests.fetch_add(1, Ordering::SeqCst);
            refuse(&shared, &mut client, "400 Bad Request", "").await;
            return;
        }
        // A client that went away or took too long gets nothing.
        _ => return,
    };
    shared.counters.requests.fetch_add(1, Ordering::SeqCst);
    let Some((request_line, headers)) = head.split_first() else {
        refuse(&shared, &mut client, "400 Bad Request", "").await;
        return;
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        refuse(&shared, &mut client, "400 Bad Request", "").await;
        return;
    };
    if !version.starts_with("HTTP/1.") {
        refuse(&shared, &mut client, "400 Bad Request", "").await;
        return;
    }
    if method != "CONNECT" {
        refuse(&shared, &mut client, "405 Method Not Allowed", "").await;
        return;
    }
    if let Some(expected) = &shared.credentials
        && !authorized(headers, expected)
    {
        refuse(
            &shared,
            &mut client,
            "407 Proxy Authentication Required",
            "Proxy-Authenticate: Basic realm=\"test\"\r\n",
        )
        .await;
        return;
    }
    let Some(candidates) = loopback_target(target) else {
        refuse(&shared, &mut client, "403 Forbidden", "").await;
        return;
    };
    let mut server = None;
    for candidate in candidates {
        if let Ok(stream) = TcpStream::connect(candidate).await {
            server = Some(stream);
            break;
        }
    }
    let Some(mut server) = server else {
        refuse(&shared, &mut client, "502 Bad Gateway", "").await;
        return;
    };
    // Counted before the answer, so a client that sees its tunnel also sees it counted.
    shared.counters.tunnels.fetch_add(1, Ordering::SeqCst);
    if client
        .get_mut()
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    // The buffered reader hands over anything the client sent past its head first.
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

/// Why a request head was not read.
enum Unread {
    /// Too long or not text: answered 400.
    BadRequest,
    /// The client went away.
    Gone,
}

/// Reads a request head up to its empty line, at most [`MAX_HEAD`] bytes.
async fn read_head(client: &mut BufReader<TcpStream>) -> Result<Vec<String>, Unread> {
    let mut limited = (&mut *client).take(MAX_HEAD);
    let mut lines = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        limited
            .read_until(b'\n', &mut line)
            .await
            .map_err(|_| Unread::Gone)?;
        let Some(text) = line.strip_suffix(b"\n") else {
            return Err(if limited.limit() == 0 {
                Unread::BadRequest
            } else {
                Unread::Gone
            });
        };
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Ok(lines);
        }
        let text = std::str::from_utf8(text).map_err(|_| Unread::BadRequest)?;
        lines.push(text.to_owned());
    }
}

/// Whether the headers carry Basic credentials equal to `expected` (`user:password`).
fn authorized(headers: &[String], expected: &str) -> bool {
    headers
        .iter()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("proxy-authorization"))
        .filter_map(|(_, value)| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .filter_map(|(_, encoded)| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
        })
        .any(|decoded| decoded == expected.as_bytes())
}

/// The loopback addresses of a `host:port` target, in the order to try them; `None` for
/// a target off loopback, or one that is not `host:port`. Names other than `localhost`
/// are never looked up: that alone could leave the machine.
fn loopback_target(target: &str) -> Option<Vec<SocketAddr>> {
    let (host, port) = target.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return Some(vec![
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
        ]);
    }
    let ip: IpAddr = host.parse().ok()?;
    ip.is_loopback().then(|| vec![SocketAddr::new(ip, port)])
}

/// Answers `status` with `headers` (each ending in CRLF) and closes; counted first, so a
/// client that sees the refusal also sees it counted.
async fn refuse(shared: &Shared, client: &mut BufReader<TcpStream>, status: &str, headers: &str) {
    shared.counters.refused.fetch_add(1, Ordering::SeqCst);
    let answer =
        format!("HTTP/1.1 {status}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n");
    let stream = client.get_mut();
    if stream.write_all(answer.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    // A lingering close: closing with unread input would reset the connection, and the
    // client could lose the answer. Bounded in bytes and time.
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIMEOUT, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::echo;

    /// Sends `request` to the proxy and returns its answer head's status line, with the
    /// stream for whatever follows.
    async fn ask(proxy: &ConnectProxy, request: &[u8]) -> (String, BufReader<TcpStream>) {
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connects");
        stream.write_all(request).await.expect("writes");
        let mut stream = BufReader::new(stream);
        let mut status = String::new();
        stream.read_line(&mut status).await.expect("reads");
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.expect("reads") == 0 || line == "\r\n" {
                break;
            }
            if line.starts_with("Proxy-Authenticate") {
                status.push_str(&line);
            }
        }
        (status, stream)
    }

    #[test]
    fn only_loopback_targets_are_let_through() {
        let v4 = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 80);
        let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 80);
        assert_eq!(loopback_target("127.0.0.1:80"), Some(vec![v4]));
        assert_eq!(loopback_target("[::1]:80"), Some(vec![v6]));
        assert_eq!(loopback_target("LocalHost:80"), Some(vec![v4, v6]));
        for target in [
            "10.0.0.1:80",
            "[2001:db8::1]:443",
            "intake.example.com:443",
            "127.0.0.1",
            "127.0.0.1:x",
        ] {
            assert_eq!(loopback_target(target), None, "{target}");
        }
    }

    #[test]
    fn only_the_right_basic_credentials_pass() {
        let header = |value: &str| vec![format!("Proxy-Authorization: {value}")];
        // "u:p" and "u:q".
        assert!(authorized(&header("Basic dTpw"), "u:p"));
        assert!(authorized(&header("basic  dTpw "), "u:p"));
        assert!(!authorized(&header("Basic dTpx"), "u:p"));
        assert!(!authorized(&header("Bearer dTpw"), "u:p"));
        assert!(!authorized(&[], "u:p"));
    }

    #[tokio::test]
    async fn a_tunnel_carries_bytes_both_ways_and_is_counted() {
        let target = echo().await;
        let proxy = ConnectProxy::start(None).await.expect("starts");
        let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\nearly");
        let (status, mut stream) = ask(&proxy, request.as_bytes()).await;
        assert_eq!(status, "HTTP/1.1 200 Connection established\r\n");
        assert_eq!(proxy.tunnels(), 1);
        // Bytes sent right behind the request head went through too.
        stream
            .get_mut()
            .write_all(b" and late")
            .await
            .expect("writes");
        let mut back = [0u8; 14];
        stream.read_exact(&mut back).await.expect("echo");
        assert_eq!(&back, b"early and late");
    }

    #[tokio::test]
    async fn refusals_are_answered_and_counted() {
        let target = echo().await;
        let proxy = ConnectProxy::start(Some(("u".into(), "p".into())))
            .await
            .expect("starts");
        let (status, _) = ask(
            &proxy,
            format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(
            status,
            "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\n"
        );
        let authorized = "Proxy-Authorization: Basic dTpw\r\n";
        let (status, _) = ask(
            &proxy,
            format!("CONNECT intake.example.com:443 HTTP/1.1\r\n{authorized}\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status, "HTTP/1.1 403 Forbidden\r\n");
        let (status, _) = ask(&proxy, b"GET http://127.0.0.1/ HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, "HTTP/1.1 405 Method Not Allowed\r\n");
        let long = format!("CONNECT {target} HTTP/1.1\r\n{}", "X: y\r\n".repeat(2000));
        let (status, _) = ask(&proxy, long.as_bytes()).await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request\r\n");
        assert_eq!((proxy.tunnels(), proxy.refused()), (0, 4));
        assert_eq!(proxy.counters().requests.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_stopped_proxy_closes_its_port_and_its_tunnels() {
        let target = echo().await;
        let proxy = ConnectProxy::start(None).await.expect("starts");
        let addr = proxy.addr();
        let (status, mut tunnel) = ask(
            &proxy,
            format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(status.contains("200"), "{status}");
        proxy.stop().await;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tunnel.read_to_end(&mut rest))
            .await
            .expect("the tunnel ends");
        assert!(read.is_err() || rest.is_empty(), "{read:?}");
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
