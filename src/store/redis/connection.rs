//! Getting commands to Redis: standalone, cluster or through Sentinel, each
//! reconnecting by itself. The rest of the store sees one [`Connection`].

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisResult, Value};

use super::errors::ConfigError;
use super::stats::is_connection_error;

/// What to connect to, as the builder was told: where, and whom to trust
/// for TLS.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) addr: Addr,
    pub(crate) tls: Tls,
}

/// Where Redis is.
#[derive(Clone, Debug)]
pub(crate) enum Addr {
    /// `redis://` or `rediss://` URL of one server.
    Url(String),
    /// The redis crate's own connection info (the escape hatch).
    Info(Box<ConnectionInfo>),
    /// URLs of some cluster nodes (the rest are discovered).
    Cluster(Vec<String>),
    /// URLs of Sentinels, and the name of the master they watch.
    Sentinel { nodes: Vec<String>, service: String },
}

/// The certificate authorities a TLS connection trusts: the system's
/// (the `redis` crate's bundled web roots), or the ones the user gave.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tls {
    /// PEM certificates to trust instead of the bundled roots.
    #[cfg(feature = "tls")]
    pub(crate) ca_pem: Option<Vec<u8>>,
}

impl Tls {
    /// The `redis` crate's form of the trusted CAs, if the user gave any.
    #[cfg(feature = "tls")]
    fn certificates(&self) -> Option<redis::TlsCertificates> {
        self.ca_pem.as_ref().map(|pem| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        })
    }

    /// Whether the user gave CAs to trust.
    fn given(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.ca_pem.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// A client for one server, trusting the CAs given (if any).
    fn client(&self, info: impl IntoConnectionInfo) -> RedisResult<Client> {
        #[cfg(feature = "tls")]
        if let Some(certificates) = self.certificates() {
            return Client::build_with_tls(info, certificates);
        }
        Client::open(info)
    }

    /// Refuses CAs that cannot be used: no certificate in the PEM, or a
    /// target that is not TLS (the CA would silently not apply).
    fn check(&self, addr: &Addr) -> Result<(), ConfigError> {
        if !self.given() {
            return Ok(());
        }
        #[cfg(feature = "tls")]
        if let Some(pem) = &self.ca_pem {
            use rustls::pki_types::pem::PemObject;
            let certificates: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| ConfigError(format!("the trusted CA is not valid PEM: {e}")))?;
            if certificates.is_empty() {
                return Err(ConfigError(
                    "the trusted CA PEM holds no certificate (`-----BEGIN CERTIFICATE-----`)"
                        .into(),
                ));
            }
        }
        let plain = |url: &String| !url.starts_with("rediss://");
        match addr {
            Addr::Url(url) if plain(url) => Err(ConfigError(format!(
                "a CA to trust was given, but {url} is not a TLS URL: use rediss://"
            ))),
            Addr::Cluster(urls) => match urls.iter().find(|url| plain(url)) {
                Some(url) => Err(ConfigError(format!(
                    "a CA to trust was given, but cluster node {url} is not a TLS URL: use rediss://"
                ))),
                None => Ok(()),
            },
            Addr::Info(info) if !matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) => {
                Err(ConfigError(
                    "a CA to trust was given, but the connection info is not TLS".into(),
                ))
            }
            Addr::Sentinel { .. } => Err(ConfigError(
                "a CA to trust is not supported with Sentinel; use redis_connection_info for \
                 the master, or the system's trusted roots"
                    .into(),
            )),
            _ => Ok(()),
        }
    }
}

impl Target {
    /// Refuses `rediss://` when TLS is not compiled in, with a message that
    /// says which feature to enable (the redis crate's own is less direct),
    /// and a CA that cannot apply.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let urls: &[String] = match &self.addr {
            Addr::Url(url) => std::slice::from_ref(url),
            Addr::Cluster(urls) | Addr::Sentinel { nodes: urls, .. } => urls,
            Addr::Info(_) => &[],
        };
        if urls.is_empty() && !matches!(self.addr, Addr::Info(_)) {
            return Err(ConfigError("no Redis address given".into()));
        }
        if !cfg!(feature = "tls") {
            if let Some(url) = urls.iter().find(|url| url.starts_with("rediss://")) {
                return Err(ConfigError(format!(
                    "{url} needs TLS: enable cachex's `tls` feature"
                )));
            }
        }
        self.tls.check(&self.addr)
    }

    /// A client for the server a subscriber connection goes to: the
    /// server itself, the `attempt`-th cluster node (round robin, so that
    /// a dead node is not retried for ever), or the master the Sentinels
    /// name now (which follows a failover).
    pub(crate) async fn subscriber_client(&self, attempt: usize) -> RedisResult<Client> {
        match &self.addr {
            Addr::Url(url) => self.tls.client(url.as_str()),
            Addr::Info(info) => self.tls.client((**info).clone()),
            Addr::Cluster(nodes) => self
                .tls
                .client(nodes[attempt % nodes.len().max(1)].as_str()),
            Addr::Sentinel { nodes, service } => {
                let mut sentinel = SentinelClient::build(
                    nodes.clone(),
                    service.clone(),
                    None,
                    SentinelServerType::Master,
                )?;
                sentinel.async_get_client().await
            }
        }
    }
}

/// A connection to Redis, shared by every call of a store (all multiplex
/// their commands over it).
pub(crate) enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Box<SentinelConnection>),
}

impl Connection {
    /// Connects, waiting at most about `timeout` per attempt.
    pub(crate) async fn open(target: Target, timeout: Duration) -> RedisResult<Connection> {
        let Target { addr, tls } = target;
        match addr {
            Addr::Url(url) => {
                let client = tls.client(url.as_str())?;
                Ok(Connection::Standalone(manager(client, timeout).await?))
            }
            Addr::Info(info) => {
                let client = tls.client(*info)?;
                Ok(Connection::Standalone(manager(client, timeout).await?))
            }
            Addr::Cluster(nodes) => {
                let builder = ClusterClient::builder(nodes)
                    .connection_timeout(timeout)
                    .response_timeout(backstop(timeout));
                #[cfg(feature = "tls")]
                let builder = match tls.certificates() {
                    Some(certificates) => builder.certs(certificates),
                    None => builder,
                };
                Ok(Connection::Cluster(
                    builder.build()?.get_async_connection().await?,
                ))
            }
            Addr::Sentinel { nodes, service } => {
                let client =
                    SentinelClient::build(nodes, service, None, SentinelServerType::Master)?;
                let sentinel = SentinelConnection {
                    client: tokio::sync::Mutex::new(client),
                    master: parking_lot::RwLock::new(None),
                    timeout,
                };
                sentinel.master().await?;
                Ok(Connection::Sentinel(Box::new(sentinel)))
            }
        }
    }

    /// Sends one command. An error reply (`NOPERM`, `READONLY`, `OOM`...)
    /// is an `Err`, whatever the connection kind: the `redis` crate hands
    /// some back as a `Value::ServerError`, which a caller expecting, say,
    /// an integer from `UNLINK` could otherwise mistake for success.
    pub(crate) async fn query(&self, cmd: &Cmd) -> RedisResult<Value> {
        self.send(cmd, Resend::IfStale).await
    }

    /// [`query`](Self::query), never sent a second time: for a write that
    /// must not land after writes sent later (see [`Resend`]).
    pub(crate) async fn query_once(&self, cmd: &Cmd) -> RedisResult<Value> {
        self.send(cmd, Resend::Never).await
    }

    async fn send(&self, cmd: &Cmd, resend: Resend) -> RedisResult<Value> {
        match self {
            // Cloning is how these connections are shared: an `Arc` or a
            // channel sender, not a new socket.
            Connection::Standalone(conn) => resend
                .run(|| {
                    let mut conn = conn.clone();
                    async move { conn.send_packed_command(cmd).await }
                })
                .await
                .and_then(Value::extract_error),
            Connection::Cluster(conn) => conn
                .clone()
                .req_packed_command(cmd)
                .await
                .and_then(Value::extract_error),
            Connection::Sentinel(sentinel) => {
                let result = sentinel
                    .master()
                    .await?
                    .send_packed_command(cmd)
                    .await
                    .and_then(Value::extract_error);
                sentinel.forget_master_on(&result);
                result
            }
        }
    }

    /// Sends the `count` commands of `pipe` in one round trip.
    pub(crate) async fn pipeline(
        &self,
        pipe: &Pipeline,
        count: usize,
        resend: Resend,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Connection::Standalone(conn) => {
                resend
                    .run(|| {
                        let mut conn = conn.clone();
                        async move { conn.send_packed_commands(pipe, 0, count).await }
                    })
                    .await
            }
            Connection::Cluster(conn) => conn.clone().req_packed_commands(pipe, 0, count).await,
            Connection::Sentinel(sentinel) => {
                let result = sentinel
                    .master()
                    .await?
                    .send_packed_commands(pipe, 0, count)
                    .await;
                sentinel.forget_master_on(&result);
                if let Ok(replies) = &result {
                    sentinel.forget_master_if_demoted(replies);
                }
                result
            }
        }
    }

    /// The cluster connection, for commands that must visit every master.
    pub(crate) fn cluster(&self) -> Option<ClusterConnection> {
        match self {
            Connection::Cluster(conn) => Some(conn.clone()),
            _ => None,
        }
    }
}

/// Sends again, once, a command that failed because the connection it
/// went out on had died (the server restarted, or the network dropped it):
/// the failure starts a reconnection, and the second attempt goes out on
/// the new connection. Without this, the first call after every outage
/// would fail although the server is back. A refused connection is not
/// retried: nothing listens, and failing fast is the point. Every command
/// the store sends may be repeated safely (`GET`, `SET`, `UNLINK`, `PTTL`,
/// `SCAN`; a repeated `PUBLISH` invalidates a key twice).
///
/// Repeated, but maybe not in order: the second attempt can reach Redis
/// after commands sent later on the new connection. A write of a value a
/// load read from the database is therefore sent once only
/// ([`Resend::Never`]): resent after a `set` of the same key that came
/// while its connection died, it would land last and keep the older value
/// until its TTL. A failed write of a loaded value costs a later reload,
/// nothing more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resend {
    /// Once more after the connection died (see [`once_more_if_stale`]).
    IfStale,
    /// Never.
    Never,
}

impl Resend {
    /// How a write of `entries` is sent: once only if one holds a loaded
    /// value (a load time above zero; `set` writes zero).
    pub(crate) fn for_writes<'a, V: 'a>(
        mut entries: impl Iterator<Item = &'a crate::store::Envelope<V>>,
    ) -> Resend {
        if entries.any(|entry| !entry.load_time().is_zero()) {
            Resend::Never
        } else {
            Resend::IfStale
        }
    }

    async fn run<T, F, Fut>(self, send: F) -> RedisResult<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        match self {
            Resend::IfStale => once_more_if_stale(send).await,
            Resend::Never => {
                let mut send = send;
                send().await
            }
        }
    }
}

async fn once_more_if_stale<T, F, Fut>(mut send: F) -> RedisResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = RedisResult<T>>,
{
    match send().await {
        Err(e) if is_connection_error(&e) && !e.is_connection_refusal() && !e.is_timeout() => {
            send().await
        }
        result => result,
    }
}

/// A standalone connection that reconnects by itself.
///
/// One connection attempt per reconnection, no retries: commands sent
/// while the connection is being re-established wait for that attempt, so
/// with retries (the redis crate's default is 6, with growing delays) every
/// call during an outage would wait out its timeout although a killed
/// server refuses connections at once. Without them, a refused connection
/// fails the call at once (and opens a hybrid store's breaker), and the
/// next call makes the next attempt.
///
/// No response timeout of its own: every command already runs under the
/// store's timeout (`Inner::call`), and a second timer per command would
/// cost CPU on every call (a timer-wheel insert and removal) and protect
/// nothing: a timed-out response does not make the client reconnect either
/// way, and a dead connection is noticed through its socket.
async fn manager(client: Client, timeout: Duration) -> RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None)
        .set_number_of_retries(0);
    ConnectionManager::new_with_config(client, config).await
}

/// The cluster client's own response timeout: a backstop behind the
/// store's, longer so that the store's fires first and callers see one
/// kind of timeout error. Kept for clusters, whose client also sends
/// commands of its own (slot refreshes) that no store call bounds.
fn backstop(timeout: Duration) -> Duration {
    timeout.saturating_mul(2)
}

/// The master a set of Sentinels points at. The master's connection
/// reconnects by itself like a standalone one; after a connection failure
/// (or a write refused by a demoted master) the Sentinels are asked again,
/// which is how a failover is followed.
pub(crate) struct SentinelConnection {
    client: tokio::sync::Mutex<SentinelClient>,
    master: parking_lot::RwLock<Option<ConnectionManager>>,
    timeout: Duration,
}

impl SentinelConnection {
    async fn master(&self) -> RedisResult<ConnectionManager> {
        if let Some(master) = self.master.read().clone() {
            return Ok(master);
        }
        // Boxed: asking the Sentinels and connecting is a large future, and
        // rare; inline, it would grow every command's future (and its copy
        // into the store's box) by kilobytes.
        Box::pin(self.find_master()).await
    }

    async fn find_master(&self) -> RedisResult<ConnectionManager> {
        // One caller asks the Sentinels; the others wait and reuse its answer.
        let mut client = self.client.lock().await;
        if let Some(master) = self.master.read().clone() {
            return Ok(master);
        }
        let master = manager(client.async_get_client().await?, self.timeout).await?;
        *self.master.write() = Some(master.clone());
        Ok(master)
    }

    /// A pipeline's replies come back one by one: a `READONLY` among them
    /// means the master was demoted as surely as a failed command does.
    fn forget_master_if_demoted(&self, replies: &[Value]) {
        let demoted = replies
            .iter()
            .any(|reply| matches!(reply, Value::ServerError(e) if e.code() == "READONLY"));
        if demoted {
            *self.master.write() = None;
        }
    }

    fn forget_master_on<T>(&self, result: &RedisResult<T>) {
        if let Err(e) = result {
            if is_connection_error(e) || e.code() == Some("READONLY") {
                *self.master.write() = None;
            }
        }
    }
}
