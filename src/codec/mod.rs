//! Turning cached values into bytes and back, for stores that keep bytes
//! (Redis).
//!
//! A [`Codec`] is a serde format. cachex ships three, each behind a cargo
//! feature: [`MessagePack`] (`msgpack`, the default), `Json` (`json`,
//! readable with `redis-cli`) and `Postcard` (`postcard`, the most
//! compact, but values must not use `#[serde(untagged)]`, `flatten` or other
//! self-describing features). Implement the trait to bring your own.
//!
//! # Stored bytes
//!
//! Every entry is stored behind a 4-byte header, so that bytes written by
//! another codec, another program or a future cachex are detected instead of
//! misread:
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | magic, `0xCA` |
//! | 1 | format version, `3` |
//! | 2 | the codec's [`Codec::ID`] |
//! | 3 | flags: bit 0 set = the payload is LZ4-compressed; bit 1 set = a "not found" entry (no value); bit 2 set = the entry expires; bit 3 set = the entry has tags; other bits must be 0 |
//!
//! then, if the entry has tags, its tag section (never compressed, so that
//! a Redis script can read it): the number of tags (one byte), then for
//! each its name's length (one byte), its name, and the version recorded at
//! the write (8 bytes, big-endian; see [`tag`](crate::tag)); then the
//! payload: the entry's load time in nanoseconds (an unsigned
//! LEB128 varint); if it expires, its write time (milliseconds since the
//! Unix epoch, by the writer's clock) and its TTL in milliseconds (two more
//! varints); then, unless the entry is "not found", the codec's encoding of
//! the value and nothing else. So a reader in another language (or
//! `redis-cli` with the `Json` codec) finds the value as plain codec bytes
//! after the header and one or three varints.
//!
//! The write time and TTL are there so that a plain `GET` or `MGET` tells
//! a reader how long the entry has left (what refresh decisions and a
//! two-tier store's promotion need) without a `PTTL` round trip. Redis's
//! own expiry, set from the same TTL, is still what removes the key; the
//! header's answer is clamped to the TTL, so writers' clocks that disagree
//! shift refresh decisions by the skew at most.
//!
//! **Versions**: this cachex writes version 3 and reads versions 2 and 3
//! (a version 2 entry costs a `PTTL` to learn its TTL). Other versions,
//! version 3 entries read by a cachex that only knows version 2 among them,
//! are refused with [`FrameError::UnsupportedVersion`]. When compressed, the payload is the
//! uncompressed length (`u32`, little-endian) followed by an LZ4 block of the
//! above. Values are compressed (with the `compression` feature) when their
//! payload is larger than the store's threshold and compression makes them
//! smaller.
//!
//! Why the envelope (load time, "not found") is in the frame rather than
//! encoded by the codec: a codec like MessagePack encodes a struct with its
//! field names, and decoding them cost about as much as the rest of a read
//! through cachex put together (format version 1 did that).
//!
//! Anything else under a key (a different magic, version, codec id or flag,
//! a truncated or corrupt payload) is a [`FrameError`] or the codec's own
//! error, reported as [`Error::Codec`](crate::Error::Codec) with the key.

mod frame;
#[cfg(feature = "json")]
mod json;
#[cfg(feature = "msgpack")]
mod msgpack;
#[cfg(feature = "postcard")]
mod postcard;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::BoxError;

pub use frame::FrameError;
#[allow(unused_imports)] // used by the Redis store; unused without it
pub(crate) use frame::{EncodeError, Expiry, Framing};
#[cfg(feature = "json")]
pub use json::Json;
#[cfg(feature = "msgpack")]
pub use msgpack::MessagePack;
#[cfg(feature = "postcard")]
pub use postcard::Postcard;

/// A serde format for stored values.
///
/// Codecs are used through generics (a store is `RedisStore<V, C>`), so
/// encoding costs no dynamic dispatch.
///
/// ```
/// use cachex::codec::Codec;
/// use cachex::BoxError;
/// use serde::{de::DeserializeOwned, Serialize};
///
/// /// JSON through serde_json, under an id of our own.
/// struct MyJson;
///
/// impl Codec for MyJson {
///     const ID: u8 = 200;
///     const NAME: &'static str = "my-json";
///
///     fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), BoxError> {
///         Ok(serde_json::to_writer(out, value)?)
///     }
///
///     fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, BoxError> {
///         Ok(serde_json::from_slice(bytes)?)
///     }
/// }
/// ```
pub trait Codec: Send + Sync + 'static {
    /// Written into every stored value's header; a value whose header names
    /// another id is refused rather than decoded. Ids 0 to 127 are reserved
    /// for cachex (1: MessagePack, 2: JSON, 3: postcard); pick yours in
    /// 128 to 255, and never reuse one for a different format.
    const ID: u8;

    /// A short name for error messages.
    const NAME: &'static str;

    /// Appends the encoding of `value` to `out` (which may already hold
    /// bytes: leave them as they are).
    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), BoxError>;

    /// Decodes a value from exactly `bytes`: bytes left over after the
    /// value are an error (see [`TrailingBytes`]), since the frame's
    /// contract is that nothing follows the value.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, BoxError>;
}

/// Bytes left over after a codec decoded a value: they were not written by
/// this codec encoding one value, so the value is refused rather than
/// trusted. The source of an [`Error::Codec`](crate::Error::Codec).
///
/// ```
/// use cachex::codec::TrailingBytes;
///
/// assert_eq!(TrailingBytes(2).to_string(), "2 unexpected bytes after the encoded value");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrailingBytes(pub usize);

impl std::fmt::Display for TrailingBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} unexpected bytes after the encoded value", self.0)
    }
}

impl std::error::Error for TrailingBytes {}

/// `Ok` if a decoder consumed everything (`rest` is empty).
#[cfg_attr(
    not(any(feature = "msgpack", feature = "json", feature = "postcard")),
    allow(dead_code)
)]
fn nothing_after(rest: usize) -> Result<(), BoxError> {
    match rest {
        0 => Ok(()),
        n => Err(Box::new(TrailingBytes(n))),
    }
}

/// The name of the codec with id `id`, when it is one of cachex's.
fn builtin_name(id: u8) -> Option<&'static str> {
    match id {
        1 => Some("msgpack"),
        2 => Some("json"),
        3 => Some("postcard"),
        _ => None,
    }
}

#[cfg(all(test, any(feature = "msgpack", feature = "json", feature = "postcard")))]
mod tests {
    use super::*;

    /// Each codec refuses a value followed by anything, even bytes that
    /// would decode as a second value.
    fn refuses_trailing_bytes<C: Codec>(codec: C) {
        let mut bytes = Vec::new();
        codec.encode("x", &mut bytes).unwrap();
        assert_eq!(codec.decode::<String>(&bytes).unwrap(), "x");
        for tail in [&b" "[..], b"\0", b"\xa2yz", b"\"yz\""] {
            let mut with_tail = bytes.clone();
            with_tail.extend_from_slice(tail);
            let err = codec.decode::<String>(&with_tail).unwrap_err();
            assert_eq!(
                err.downcast_ref::<TrailingBytes>(),
                Some(&TrailingBytes(tail.len())),
                "{} with {tail:?} after the value: {err}",
                C::NAME
            );
        }
        assert!(codec.decode::<String>(&[]).is_err(), "{}: empty", C::NAME);
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn messagepack_refuses_trailing_bytes() {
        refuses_trailing_bytes(MessagePack);
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_refuses_trailing_bytes() {
        refuses_trailing_bytes(Json);
    }

    #[cfg(feature = "postcard")]
    #[test]
    fn postcard_refuses_trailing_bytes() {
        refuses_trailing_bytes(Postcard);
    }
}
