//! The header around stored values, and compression (see the module docs of
//! [`codec`](super) for the layout).
// Only the Redis store frames values so far.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::cell::RefCell;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{builtin_name, Codec};
use crate::BoxError;

const MAGIC: u8 = 0xCA;
const VERSION: u8 = 1;
const HEADER_LEN: usize = 4;
const FLAG_LZ4: u8 = 1;
const KNOWN_FLAGS: u8 = FLAG_LZ4;
/// Bytes of the uncompressed length in front of an LZ4 block.
#[cfg(feature = "compression")]
const LEN_PREFIX: usize = 4;
/// Scratch buffers grown past this are dropped after use rather than kept
/// for the thread's lifetime.
const SCRATCH_KEEP: usize = 1 << 20;

/// Why stored bytes could not be read, or a value could not be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The bytes do not start with cachex's header: another program wrote
    /// them, or they are truncated.
    NotCachex,
    /// Written by a newer (or unknown) version of the format.
    UnsupportedVersion(u8),
    /// Written with another codec than the reader's.
    CodecMismatch {
        /// The codec id in the header.
        found: u8,
        /// The reader's codec.
        expected: &'static str,
    },
    /// The header sets flags this version does not know.
    UnknownFlags(u8),
    /// The value is compressed, and this build lacks the `compression`
    /// feature.
    CompressionUnsupported,
    /// The compressed payload is damaged.
    Corrupt(String),
    /// The value is larger than the store's limit.
    TooLarge {
        /// Its size in bytes (encoded, after compression).
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::NotCachex => {
                f.write_str("the stored bytes do not carry cachex's header (written by something else?)")
            }
            FrameError::UnsupportedVersion(v) => write!(
                f,
                "the stored value uses format version {v}; this cachex reads version {VERSION}"
            ),
            FrameError::CodecMismatch { found, expected } => match builtin_name(*found) {
                Some(name) => write!(
                    f,
                    "the stored value was written with the {name} codec; this store reads {expected}"
                ),
                None => write!(
                    f,
                    "the stored value was written with codec id {found}; this store reads {expected}"
                ),
            },
            FrameError::UnknownFlags(flags) => write!(
                f,
                "the stored value sets unknown header flags {flags:#04x} (written by a newer cachex?)"
            ),
            FrameError::CompressionUnsupported => f.write_str(
                "the stored value is compressed; enable cachex's `compression` feature to read it",
            ),
            FrameError::Corrupt(why) => write!(f, "the stored value is corrupt: {why}"),
            FrameError::TooLarge { len, max } => write!(
                f,
                "the value is {len} bytes encoded, over the store's limit of {max} bytes"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// Why a value could not be encoded.
#[derive(Debug)]
pub(crate) enum EncodeError {
    /// The codec failed.
    Codec(BoxError),
    /// The encoding is over the size limit ([`FrameError::TooLarge`]).
    TooLarge(FrameError),
}

/// A codec plus the header, compression and size limit around it.
#[derive(Clone, Debug)]
pub(crate) struct Framing<C> {
    codec: C,
    /// Compress encodings longer than this; `None`: never.
    #[cfg_attr(not(feature = "compression"), allow(dead_code))]
    compress_above: Option<usize>,
    max_len: usize,
}

/// Per-thread buffers, so that a write encodes without allocating.
#[derive(Default)]
struct Scratch {
    encoded: Vec<u8>,
    #[cfg(feature = "compression")]
    packed: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl<C: Codec> Framing<C> {
    /// `compress_above` is ignored without the `compression` feature.
    pub(crate) fn new(codec: C, compress_above: Option<usize>, max_len: usize) -> Self {
        Framing {
            codec,
            compress_above: if cfg!(feature = "compression") {
                compress_above
            } else {
                None
            },
            max_len,
        }
    }

    /// Encodes `value` with its header and passes the bytes to `sink`
    /// (which copies them into a command), all without allocating in the
    /// steady state.
    pub(crate) fn encode<T, R>(
        &self,
        value: &T,
        sink: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, EncodeError>
    where
        T: Serialize + ?Sized,
    {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => {
                let result = self.encode_in(&mut scratch, value, sink);
                if scratch.encoded.capacity() > SCRATCH_KEEP {
                    *scratch = Scratch::default();
                }
                result
            }
            // Only if a `Serialize` impl itself stores into cachex on this
            // thread: fall back to fresh buffers.
            Err(_) => self.encode_in(&mut Scratch::default(), value, sink),
        })
    }

    fn encode_in<T, R>(
        &self,
        scratch: &mut Scratch,
        value: &T,
        sink: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, EncodeError>
    where
        T: Serialize + ?Sized,
    {
        let encoded = &mut scratch.encoded;
        encoded.clear();
        encoded.extend_from_slice(&[MAGIC, VERSION, C::ID, 0]);
        self.codec
            .encode(value, encoded)
            .map_err(EncodeError::Codec)?;
        #[cfg(feature = "compression")]
        if let Some(threshold) = self.compress_above {
            let payload_len = encoded.len() - HEADER_LEN;
            if payload_len > threshold {
                if let Some(packed) = compress(encoded, &mut scratch.packed) {
                    self.check_len(packed.len())?;
                    return Ok(sink(packed));
                }
            }
        }
        self.check_len(encoded.len())?;
        Ok(sink(encoded))
    }

    fn check_len(&self, len: usize) -> Result<(), EncodeError> {
        if len > self.max_len {
            Err(EncodeError::TooLarge(FrameError::TooLarge {
                len,
                max: self.max_len,
            }))
        } else {
            Ok(())
        }
    }

    /// Decodes bytes written by [`encode`](Self::encode).
    pub(crate) fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, BoxError> {
        let Some((header, payload)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(FrameError::NotCachex.into());
        };
        let [magic, version, codec, flags] = *header;
        if magic != MAGIC {
            return Err(FrameError::NotCachex.into());
        }
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion(version).into());
        }
        if codec != C::ID {
            return Err(FrameError::CodecMismatch {
                found: codec,
                expected: C::NAME,
            }
            .into());
        }
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FrameError::UnknownFlags(flags).into());
        }
        if flags & FLAG_LZ4 == 0 {
            return self.codec.decode(payload);
        }
        #[cfg(feature = "compression")]
        {
            let plain = decompress(payload, self.max_len)?;
            self.codec.decode(&plain)
        }
        #[cfg(not(feature = "compression"))]
        Err(FrameError::CompressionUnsupported.into())
    }
}

/// Compresses the payload of `encoded` (header included) into `packed`,
/// returning it when that saves space.
#[cfg(feature = "compression")]
fn compress<'a>(encoded: &[u8], packed: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    let (header, payload) = encoded.split_at(HEADER_LEN);
    let plain_len = u32::try_from(payload.len()).ok()?;
    let start = HEADER_LEN + LEN_PREFIX;
    packed.clear();
    packed.extend_from_slice(&header[..3]);
    packed.push(header[3] | FLAG_LZ4);
    packed.extend_from_slice(&plain_len.to_le_bytes());
    packed.resize(
        start + lz4_flex::block::get_maximum_output_size(payload.len()),
        0,
    );
    let written = lz4_flex::block::compress_into(payload, &mut packed[start..]).ok()?;
    packed.truncate(start + written);
    (packed.len() < encoded.len()).then_some(packed.as_slice())
}

/// Decompresses an LZ4 payload (length prefix, block), refusing to inflate
/// past `max_len`: the length comes from untrusted bytes.
#[cfg(feature = "compression")]
fn decompress(payload: &[u8], max_len: usize) -> Result<Vec<u8>, FrameError> {
    let Some((len, block)) = payload.split_first_chunk::<LEN_PREFIX>() else {
        return Err(FrameError::Corrupt(
            "compressed payload shorter than its length prefix".into(),
        ));
    };
    let len = u32::from_le_bytes(*len) as usize;
    if len > max_len {
        return Err(FrameError::Corrupt(format!(
            "claims {len} bytes uncompressed, over the store's limit of {max_len}"
        )));
    }
    let mut plain = vec![0; len];
    let written = lz4_flex::block::decompress_into(block, &mut plain)
        .map_err(|e| FrameError::Corrupt(format!("LZ4: {e}")))?;
    if written != len {
        return Err(FrameError::Corrupt(format!(
            "LZ4 block inflates to {written} bytes, the header says {len}"
        )));
    }
    Ok(plain)
}

#[cfg(all(test, feature = "msgpack"))]
mod tests {
    use super::*;
    use crate::codec::MessagePack;

    fn framed(framing: &Framing<MessagePack>, value: &impl Serialize) -> Vec<u8> {
        framing.encode(value, <[u8]>::to_vec).unwrap()
    }

    fn decode_err(framing: &Framing<MessagePack>, bytes: &[u8]) -> FrameError {
        let err = framing.decode::<String>(bytes).unwrap_err();
        err.downcast_ref::<FrameError>()
            .unwrap_or_else(|| panic!("not a FrameError: {err}"))
            .clone()
    }

    #[test]
    fn header_then_payload() {
        let framing = Framing::new(MessagePack, None, 1 << 20);
        let bytes = framed(&framing, &"hi".to_string());
        assert_eq!(&bytes[..4], &[MAGIC, VERSION, MessagePack::ID, 0]);
        assert_eq!(framing.decode::<String>(&bytes).unwrap(), "hi");
    }

    #[test]
    fn foreign_bytes_are_refused_not_misread() {
        let framing = Framing::new(MessagePack, None, 1 << 20);
        assert_eq!(decode_err(&framing, b""), FrameError::NotCachex);
        assert_eq!(decode_err(&framing, b"\xCA\x01"), FrameError::NotCachex);
        assert_eq!(decode_err(&framing, b"hello world"), FrameError::NotCachex);
        assert_eq!(
            decode_err(&framing, &[MAGIC, 9, MessagePack::ID, 0, 0xa0]),
            FrameError::UnsupportedVersion(9)
        );
        assert_eq!(
            decode_err(&framing, &[MAGIC, VERSION, 2, 0, b'"', b'"']),
            FrameError::CodecMismatch {
                found: 2,
                expected: "msgpack"
            }
        );
        assert_eq!(
            decode_err(&framing, &[MAGIC, VERSION, MessagePack::ID, 0x80, 0xa0]),
            FrameError::UnknownFlags(0x80)
        );
        // A valid header over garbage: the codec's own error.
        let err = framing
            .decode::<String>(&[MAGIC, VERSION, MessagePack::ID, 0, 0xc1])
            .unwrap_err();
        assert!(err.downcast_ref::<FrameError>().is_none());
    }

    #[test]
    fn too_large_is_refused() {
        let framing = Framing::new(MessagePack, None, 16);
        let err = framing.encode(&"x".repeat(100), |_| ()).unwrap_err();
        assert!(matches!(
            err,
            EncodeError::TooLarge(FrameError::TooLarge { max: 16, .. })
        ));
    }

    #[cfg(feature = "compression")]
    #[test]
    fn compresses_above_the_threshold_only_when_it_helps() {
        let framing = Framing::new(MessagePack, Some(64), 1 << 20);
        let small = framed(&framing, &"a".repeat(10));
        assert_eq!(small[3], 0);
        let big = "abc".repeat(1000);
        let packed = framed(&framing, &big);
        assert_eq!(packed[3], FLAG_LZ4);
        assert!(packed.len() < 500, "{}", packed.len());
        assert_eq!(framing.decode::<String>(&packed).unwrap(), big);
    }

    proptest::proptest! {
        #[test]
        fn any_value_round_trips(
            text in ".{0,300}",
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2000),
            n in proptest::num::i64::ANY,
            threshold in proptest::option::of(0usize..512),
        ) {
            let framing = Framing::new(MessagePack, threshold, 1 << 20);
            let value = (text, bytes, n);
            let framed = framing.encode(&value, <[u8]>::to_vec).unwrap();
            proptest::prop_assert_eq!(framing.decode::<(String, Vec<u8>, i64)>(&framed).unwrap(), value);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let framing = Framing::new(MessagePack, Some(0), 1 << 16);
            let _ = framing.decode::<(String, u64)>(&bytes);
        }
    }

    #[cfg(feature = "compression")]
    #[test]
    fn a_compression_bomb_is_refused() {
        let framing = Framing::new(MessagePack, Some(0), 1 << 10);
        let mut bytes = vec![MAGIC, VERSION, MessagePack::ID, FLAG_LZ4];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0x1f, 0]);
        assert!(matches!(
            decode_err(&framing, &bytes),
            FrameError::Corrupt(_)
        ));
        let mut short = vec![MAGIC, VERSION, MessagePack::ID, FLAG_LZ4];
        short.extend_from_slice(&100u32.to_le_bytes());
        short.extend_from_slice(&[0xff, 0xff]);
        assert!(matches!(
            decode_err(&framing, &short),
            FrameError::Corrupt(_)
        ));
    }
}
