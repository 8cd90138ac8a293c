//! The Redis store's own failures, found as the `source()` of a cachex
//! [`Error`](crate::Error).

use std::fmt;
use std::time::Duration;

/// A Redis call did not finish within the store's
/// [timeout](super::RedisStoreBuilder::timeout). The source of an
/// [`Error::Store`](crate::Error::Store).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedOut {
    /// The timeout that ran out.
    pub after: Duration,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redis did not answer: timed out after {:?}", self.after)
    }
}

impl std::error::Error for TimedOut {}

/// The store was set up, or asked, to do something it refuses: a bad
/// prefix, a `rediss://` URL without the `tls` feature, `clear` without a
/// prefix or [`allow_flushdb`](super::RedisStoreBuilder::allow_flushdb).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub(crate) String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Redis answered something the store did not ask for (a reply of the
/// wrong shape): a bug, or a proxy in the way.
#[derive(Clone, Debug)]
pub struct UnexpectedReply(pub(crate) String);

impl fmt::Display for UnexpectedReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unexpected reply from Redis: {}", self.0)
    }
}

impl std::error::Error for UnexpectedReply {}

/// The key holds a value of another Redis type (a list, a hash...): data
/// another program put there. The source of an
/// [`Error::Codec`](crate::Error::Codec).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrongType;

impl fmt::Display for WrongType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the key holds a Redis value that is not a string (written by something else?)")
    }
}

impl std::error::Error for WrongType {}

/// The TLS handshake with Redis failed: the server's certificate is not
/// signed by a trusted CA, names another host, or has expired. The source of an [`Error::Store`](crate::Error::Store)
/// from [`RedisStoreBuilder::build`](super::RedisStoreBuilder::build).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFailed {
    /// What the TLS library said, and what it likely means.
    pub(crate) reason: String,
}

impl fmt::Display for TlsFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS handshake with Redis failed: {}", self.reason)
    }
}

impl std::error::Error for TlsFailed {}

#[cfg(feature = "tls")]
impl TlsFailed {
    /// The TLS failure behind a connection error, if that is what it is.
    /// The `redis` crate keeps the I/O error (which holds rustls's) in an
    /// `Arc`; `io::Error::source` would skip it, so it is unwrapped here.
    pub(crate) fn from_redis(error: &redis::RedisError) -> Option<TlsFailed> {
        use std::sync::Arc;
        type Shared = Arc<dyn std::error::Error + Send + Sync>;
        let inner = std::error::Error::source(error)?.downcast_ref::<Shared>()?;
        let io = inner.downcast_ref::<std::io::Error>()?;
        let tls = io.get_ref()?.downcast_ref::<rustls::Error>()?;
        Some(TlsFailed {
            reason: describe(tls),
        })
    }
}

/// rustls's words, and what they usually mean for a Redis user.
#[cfg(feature = "tls")]
fn describe(error: &rustls::Error) -> String {
    use rustls::{CertificateError as Cert, Error as Tls};
    let hint = match error {
        Tls::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => {
            "the server's certificate is not signed by a trusted CA (the one given to \
             `tls_ca_pem`, or the bundled roots)"
        }
        Tls::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            "the server's certificate does not name the host of the URL"
        }
        Tls::InvalidCertificate(
            Cert::Expired
            | Cert::ExpiredContext { .. }
            | Cert::NotValidYet
            | Cert::NotValidYetContext { .. },
        ) => "the server's certificate is outside its validity period",
        _ => return error.to_string(),
    };
    format!("{error}: {hint}")
}
