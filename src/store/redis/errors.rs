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
