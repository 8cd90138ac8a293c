//! The one error type of the async interface.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// A boxed error, the form in which loaders and stores hand their failures
/// over. Anything that converts into it is accepted: every
/// `std::error::Error + Send + Sync`, `String`, `&str`, and (through its own
/// conversion) `anyhow::Error`.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure shared by everyone who saw it.
///
/// One loader failure reaches every caller waiting on that load, so the
/// source is reference-counted rather than boxed; that is also what makes
/// [`Error`] `Clone`.
pub(crate) type SharedSource = Arc<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong in a [`Cache`](crate::Cache) operation.
///
/// A miss is not an error: lookups answer `Ok(None)`. Match on the variants,
/// or use the accessors ([`is_closed`](Self::is_closed), [`key`](Self::key),
/// ...) instead of comparing messages. Causes are reachable through
/// [`std::error::Error::source`], and they are the loader's or store's own
/// error, so they can be downcast:
///
/// ```
/// use std::error::Error as _;
/// use cachex::Error;
///
/// #[derive(Debug)]
/// struct RowLocked;
/// impl std::fmt::Display for RowLocked {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("row locked")
///     }
/// }
/// impl std::error::Error for RowLocked {}
///
/// let err = Error::loader("user:7", RowLocked);
/// assert_eq!(err.key(), Some("user:7"));
/// assert_eq!(err.to_string(), "loader failed for key `user:7`");
/// assert!(err.source().unwrap().downcast_ref::<RowLocked>().is_some());
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Error {
    /// The key was the empty string.
    EmptyKey,
    /// The key was longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes.
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
    /// One key of a batch call (`get_many`, `set_many`, `delete_many`,
    /// `get_many_or_load`) was refused, as [`EmptyKey`](Error::EmptyKey) or
    /// [`KeyTooLong`](Error::KeyTooLong); nothing of the batch was done.
    InvalidKeyInBatch {
        /// The key's position in the batch, from 0.
        index: usize,
        /// Why it was refused: `EmptyKey` or `KeyTooLong`.
        cause: Box<Error>,
    },
    /// A batch call was given more than [`MAX_BATCH`](crate::MAX_BATCH)
    /// keys; nothing of it was done.
    BatchTooLarge {
        /// How many keys it was given.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
    /// A tag was refused: empty, longer than
    /// [`MAX_TAG_LEN`](crate::MAX_TAG_LEN) bytes, or holding an ASCII
    /// control character. Nothing was written.
    InvalidTag {
        /// The tag (cut at `MAX_TAG_LEN` characters).
        tag: String,
        /// Why it was refused.
        why: &'static str,
    },
    /// More than [`MAX_TAGS`](crate::MAX_TAGS) distinct tags were given for
    /// one entry. Nothing was written.
    TooManyTags {
        /// The limit.
        max: usize,
    },
    /// The cache's store does not support tags (a [`Store`](crate::Store)
    /// of your own: only the built-in stores do). Nothing was written.
    TagsUnsupported,
    /// The cache was [closed](crate::Cache::close).
    Closed,
    /// The loader returned an error. Errors are never cached: the next
    /// call for the key runs a loader again.
    Loader {
        /// The key being loaded.
        key: Arc<str>,
        /// The loader's error, also given by `source()`.
        source: SharedSource,
    },
    /// The loader panicked. The panic was caught; every caller waiting for
    /// that load got this error, and the next call loads again.
    LoaderPanicked {
        /// The key being loaded.
        key: Arc<str>,
        /// The panic's message, when it carried a string.
        message: Arc<str>,
    },
    /// The load took longer than the cache's
    /// [`hard_timeout`](crate::CacheBuilder::hard_timeout) and was abandoned
    /// (its loader future dropped), and there was no stale value to serve
    /// instead (see [`fail_safe`](crate::CacheBuilder::fail_safe)). Like a
    /// loader error, it reaches every caller of that load and is not cached.
    LoadTimedOut {
        /// The key being loaded.
        key: Arc<str>,
        /// The hard timeout it ran past.
        after: std::time::Duration,
    },
    /// The backing store failed (a remote store was unreachable, refused a
    /// command, ...).
    Store {
        /// What the cache asked of the store.
        op: StoreOp,
        /// The key concerned; `None` for operations on the whole store.
        key: Option<Arc<str>>,
        /// The store's error, also given by `source()`.
        source: SharedSource,
    },
    /// A value could not be encoded for, or decoded from, the store.
    Codec {
        /// The key concerned.
        key: Arc<str>,
        /// The codec's error, also given by `source()`.
        source: SharedSource,
    },
}

/// The store operation an [`Error::Store`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreOp {
    /// Reading an entry.
    Get,
    /// Writing an entry.
    Set,
    /// Removing an entry.
    Delete,
    /// Removing every entry.
    Clear,
    /// Reading an entry's remaining time-to-live.
    RemainingTtl,
    /// Connecting to the store (or setting up the connection: a bad URL or
    /// configuration).
    Connect,
    /// Acquiring, extending or releasing a distributed lock (see
    /// [`lock`](crate::lock)); the key is the lock's name.
    Lock,
    /// Reading or invalidating tags' versions (see [`tag`](crate::tag));
    /// the key is the first tag concerned.
    Tags,
}

impl Error {
    /// A loader failure for `key`.
    pub fn loader(key: impl Into<Arc<str>>, source: impl Into<BoxError>) -> Self {
        Error::Loader {
            key: key.into(),
            source: Arc::from(source.into()),
        }
    }

    /// A store failure, for backends implementing [`Store`](crate::Store).
    /// `key` is `None` for operations on the whole store.
    pub fn store(op: StoreOp, key: Option<&str>, source: impl Into<BoxError>) -> Self {
        Error::Store {
            op,
            key: key.map(Arc::from),
            source: Arc::from(source.into()),
        }
    }

    /// A codec failure, for backends that serialize values.
    pub fn codec(key: &str, source: impl Into<BoxError>) -> Self {
        Error::Codec {
            key: Arc::from(key),
            source: Arc::from(source.into()),
        }
    }

    /// A loader panic for `key`, with the message recovered from the panic
    /// payload.
    pub(crate) fn panicked(key: Arc<str>, message: Arc<str>) -> Self {
        Error::LoaderPanicked { key, message }
    }

    /// A load of `key` abandoned at the hard timeout `after`.
    pub(crate) fn load_timed_out(key: Arc<str>, after: std::time::Duration) -> Self {
        Error::LoadTimedOut { key, after }
    }

    /// Whether the cache was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed)
    }

    /// Whether the key itself was refused (empty or too long), alone or
    /// in a batch.
    pub fn is_invalid_key(&self) -> bool {
        matches!(
            self,
            Error::EmptyKey | Error::KeyTooLong { .. } | Error::InvalidKeyInBatch { .. }
        )
    }

    /// Whether a tag, or a list of tags, was refused (see
    /// [`Tags::new`](crate::Tags::new)).
    pub fn is_invalid_tag(&self) -> bool {
        matches!(self, Error::InvalidTag { .. } | Error::TooManyTags { .. })
    }

    /// Whether a load failed: its loader returned an error or panicked, or
    /// it was abandoned at the [hard timeout](crate::CacheBuilder::hard_timeout).
    pub fn is_loader(&self) -> bool {
        matches!(
            self,
            Error::Loader { .. } | Error::LoaderPanicked { .. } | Error::LoadTimedOut { .. }
        )
    }

    /// Whether a load was abandoned at the
    /// [hard timeout](crate::CacheBuilder::hard_timeout).
    pub fn is_load_timeout(&self) -> bool {
        matches!(self, Error::LoadTimedOut { .. })
    }

    /// Whether the backing store failed.
    pub fn is_store(&self) -> bool {
        matches!(self, Error::Store { .. })
    }

    /// Whether a value could not be encoded or decoded.
    pub fn is_codec(&self) -> bool {
        matches!(self, Error::Codec { .. })
    }

    /// The key the failure concerns, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Error::Loader { key, .. }
            | Error::LoaderPanicked { key, .. }
            | Error::LoadTimedOut { key, .. }
            | Error::Codec { key, .. } => Some(key),
            Error::Store { key, .. } => key.as_deref(),
            Error::EmptyKey
            | Error::KeyTooLong { .. }
            | Error::InvalidKeyInBatch { .. }
            | Error::BatchTooLarge { .. }
            | Error::InvalidTag { .. }
            | Error::TooManyTags { .. }
            | Error::TagsUnsupported
            | Error::Closed => None,
        }
    }

    /// The `error.type` of a span that failed with this error: a short,
    /// stable, low-cardinality name of the variant.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Error::EmptyKey | Error::KeyTooLong { .. } | Error::InvalidKeyInBatch { .. } => {
                "invalid_key"
            }
            Error::BatchTooLarge { .. } => "batch_too_large",
            Error::InvalidTag { .. } | Error::TooManyTags { .. } => "invalid_tag",
            Error::TagsUnsupported => "tags_unsupported",
            Error::Closed => "closed",
            Error::Loader { .. } => "loader",
            Error::LoaderPanicked { .. } => "loader_panicked",
            Error::LoadTimedOut { .. } => "load_timed_out",
            Error::Store { .. } => "store",
            Error::Codec { .. } => "codec",
        }
    }

    /// The message without the key (nor a loader's or a panic's text, which
    /// may quote it), for telemetry that must not carry keys.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn keyless_message(&self) -> String {
        match self {
            Error::Loader { .. } => "loader failed".to_owned(),
            Error::LoaderPanicked { .. } => "loader panicked".to_owned(),
            Error::LoadTimedOut { after, .. } => {
                format!("load abandoned after the hard timeout of {after:?}")
            }
            Error::Store { op, .. } => format!("cache store failed to {op}"),
            Error::Codec { .. } => "could not encode or decode a cached value".to_owned(),
            // The tag may name a user, as keys do.
            Error::InvalidTag { why, .. } => format!("tag refused: {why}"),
            Error::EmptyKey
            | Error::KeyTooLong { .. }
            | Error::InvalidKeyInBatch { .. }
            | Error::BatchTooLarge { .. }
            | Error::TooManyTags { .. }
            | Error::TagsUnsupported
            | Error::Closed => self.to_string(),
        }
    }

    /// The store operation that failed, for [`Error::Store`].
    pub fn store_op(&self) -> Option<StoreOp> {
        match self {
            Error::Store { op, .. } => Some(*op),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    // Messages name what failed and where; the cause is left to `source()`
    // so that error reporters printing the chain do not repeat it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::EmptyKey => f.write_str("cache key is empty"),
            Error::KeyTooLong { len, max } => {
                write!(f, "cache key is {len} bytes long; the limit is {max}")
            }
            Error::InvalidKeyInBatch { index, cause } => {
                write!(f, "key #{index} of the batch: {cause}")
            }
            Error::BatchTooLarge { len, max } => {
                write!(f, "the batch has {len} keys; the limit is {max} (split it)")
            }
            Error::InvalidTag { tag, why } => write!(f, "tag `{tag}` refused: {why}"),
            Error::TooManyTags { max } => {
                write!(f, "more than {max} tags for one entry")
            }
            Error::TagsUnsupported => {
                f.write_str("the cache's store does not support tags (only the built-in stores do)")
            }
            Error::Closed => f.write_str("the cache is closed"),
            Error::Loader { key, .. } => write!(f, "loader failed for key `{key}`"),
            Error::LoaderPanicked { key, message } => {
                write!(f, "loader for key `{key}` panicked: {message}")
            }
            Error::LoadTimedOut { key, after } => write!(
                f,
                "load of key `{key}` abandoned after the hard timeout of {after:?}"
            ),
            Error::Store {
                op, key: Some(key), ..
            } => {
                write!(f, "cache store failed to {op} key `{key}`")
            }
            Error::Store { op, key: None, .. } => write!(f, "cache store failed to {op}"),
            Error::Codec { key, .. } => {
                write!(
                    f,
                    "could not encode or decode the cached value of key `{key}`"
                )
            }
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            // The inner error itself, not the `Arc` around it, so that
            // `downcast_ref` on the source finds the caller's own type.
            Error::Loader { source, .. }
            | Error::Store { source, .. }
            | Error::Codec { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

impl fmt::Display for StoreOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreOp::Get => "get",
            StoreOp::Set => "set",
            StoreOp::Delete => "delete",
            StoreOp::Clear => "clear",
            StoreOp::RemainingTtl => "read the time-to-live of",
            StoreOp::Connect => "connect",
            StoreOp::Lock => "lock",
            StoreOp::Tags => "read or invalidate tag",
        })
    }
}
