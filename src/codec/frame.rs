//! The header around stored values, and compression (see the module docs of
//! [`codec`](super) for the layout).
// Only the Redis store frames values so far.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::cell::RefCell;
use std::fmt;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{builtin_name, Codec};
use crate::store::Envelope;
use crate::tag::{Stamp, TagCell, TagStamps};
use crate::BoxError;

const MAGIC: u8 = 0xCA;
/// Version 1 encoded the whole envelope with the codec (field names and
/// all: about a thousand instructions per read with MessagePack); version 2
/// keeps the envelope's metadata in the frame and hands the codec only the
/// value; version 3 adds the entry's write time and TTL, so that a plain
/// `GET` (or `MGET`) tells how long the entry has left without a `PTTL`.
const VERSION: u8 = 3;
/// Still read: the same layout, without the expiry.
const VERSION_2: u8 = 2;
const HEADER_LEN: usize = 4;
const FLAG_LZ4: u8 = 1;
/// A "not found" entry: no value follows the load time.
const FLAG_NOT_FOUND: u8 = 2;
/// The entry expires: its write time and TTL follow the load time.
const FLAG_EXPIRES: u8 = 4;
/// The entry has tags: their section follows the header, outside the
/// compressed payload, where the Redis store's read script finds it.
pub(crate) const FLAG_TAGS: u8 = 8;
const KNOWN_FLAGS: u8 = FLAG_LZ4 | FLAG_NOT_FOUND | FLAG_EXPIRES | FLAG_TAGS;
const KNOWN_FLAGS_V2: u8 = FLAG_LZ4 | FLAG_NOT_FOUND;
/// The longest LEB128 encoding of a `u64`.
const MAX_VARINT_LEN: usize = 10;
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
                "the stored value uses format version {v}; this cachex reads versions {VERSION_2} and {VERSION}"
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

/// Appends `n` in LEB128: seven bits a byte, low bits first, high bit set
/// on every byte but the last.
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a LEB128 `u64` off the front of `bytes`: the number and the rest.
fn take_varint(bytes: &[u8]) -> Result<(u64, &[u8]), FrameError> {
    let mut n = 0u64;
    for (i, &byte) in bytes.iter().take(MAX_VARINT_LEN).enumerate() {
        let bits = u64::from(byte & 0x7f);
        let shift = 7 * i as u32;
        if shift == 63 && bits > 1 {
            break; // more than 64 bits
        }
        n |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok((n, &bytes[i + 1..]));
        }
    }
    Err(FrameError::Corrupt(
        "the entry's header fields are not valid varints".into(),
    ))
}

/// When a stored entry expires, as its frame tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Written without a TTL.
    Never,
    /// Written at `written_ms` (milliseconds since the Unix epoch, by the
    /// writer's clock) for `ttl_ms` milliseconds.
    At { written_ms: u64, ttl_ms: u64 },
    /// A frame of version 2, which does not say: ask the store.
    Unknown,
}

impl Expiry {
    /// The expiry of an entry written now for `ttl_ms` (`None`: never).
    pub(crate) fn from_now(ttl_ms: Option<u64>) -> Self {
        match ttl_ms {
            None => Expiry::Never,
            Some(ttl_ms) => Expiry::At {
                written_ms: unix_ms(),
                ttl_ms,
            },
        }
    }

    /// How long the entry has left by this machine's clock: `Some(None)`
    /// for never, `None` when the frame does not say.
    ///
    /// Clocks of different machines disagree, so the answer is clamped to
    /// `0..=ttl`: a writer's clock ahead of the reader's cannot make an
    /// entry look younger than new, and one behind makes it look due (a
    /// refresh a little early), never immortal. Redis's own expiry, set
    /// from the same TTL, is what removes the key.
    pub(crate) fn remaining(self) -> Option<Option<Duration>> {
        match self {
            Expiry::Never => Some(None),
            Expiry::Unknown => None,
            Expiry::At { written_ms, ttl_ms } => {
                let age = unix_ms().saturating_sub(written_ms);
                Some(Some(Duration::from_millis(ttl_ms.saturating_sub(age))))
            }
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
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

    /// Encodes `entry`, expiring as `expiry` says, with its header and
    /// passes the bytes to `sink` (which copies them into a command), all
    /// without allocating in the steady state.
    pub(crate) fn encode<V, R>(
        &self,
        entry: &Envelope<V>,
        expiry: Expiry,
        sink: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, EncodeError>
    where
        V: Serialize,
    {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => {
                let result = self.encode_in(&mut scratch, entry, expiry, sink);
                if scratch.encoded.capacity() > SCRATCH_KEEP {
                    *scratch = Scratch::default();
                }
                result
            }
            // Only if a `Serialize` impl itself stores into cachex on this
            // thread: fall back to fresh buffers.
            Err(_) => self.encode_in(&mut Scratch::default(), entry, expiry, sink),
        })
    }

    fn encode_in<V, R>(
        &self,
        scratch: &mut Scratch,
        entry: &Envelope<V>,
        expiry: Expiry,
        sink: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, EncodeError>
    where
        V: Serialize,
    {
        let encoded = &mut scratch.encoded;
        encoded.clear();
        let mut flags = if entry.is_not_found() {
            FLAG_NOT_FOUND
        } else {
            0
        };
        if matches!(expiry, Expiry::At { .. }) {
            flags |= FLAG_EXPIRES;
        }
        let tags = entry.tags().filter(|tags| !tags.stamps().is_empty());
        if tags.is_some() {
            flags |= FLAG_TAGS;
        }
        encoded.extend_from_slice(&[MAGIC, VERSION, C::ID, flags]);
        if let Some(tags) = tags {
            put_tags(encoded, tags);
        }
        // What compression leaves as it is: the header and the tags.
        #[cfg_attr(not(feature = "compression"), allow(unused_variables))]
        let head_len = encoded.len();
        let load_ns = u64::try_from(entry.load_time().as_nanos()).unwrap_or(u64::MAX);
        put_varint(encoded, load_ns);
        if let Expiry::At { written_ms, ttl_ms } = expiry {
            put_varint(encoded, written_ms);
            put_varint(encoded, ttl_ms);
        }
        if let Some(value) = entry.value() {
            self.codec
                .encode(value, encoded)
                .map_err(EncodeError::Codec)?;
        }
        #[cfg(feature = "compression")]
        if let Some(threshold) = self.compress_above {
            let payload_len = encoded.len() - head_len;
            if payload_len > threshold {
                if let Some(packed) = compress(encoded, head_len, &mut scratch.packed) {
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

    /// Decodes bytes written by [`encode`](Self::encode) (or by a cachex
    /// writing format version 2, whose expiry is then
    /// [`Unknown`](Expiry::Unknown)).
    pub(crate) fn decode<V: DeserializeOwned>(
        &self,
        bytes: &[u8],
    ) -> Result<(Envelope<V>, Expiry), BoxError> {
        let Some((header, payload)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(FrameError::NotCachex.into());
        };
        let [magic, version, codec, flags] = *header;
        if magic != MAGIC {
            return Err(FrameError::NotCachex.into());
        }
        let known_flags = match version {
            VERSION => KNOWN_FLAGS,
            VERSION_2 => KNOWN_FLAGS_V2,
            _ => return Err(FrameError::UnsupportedVersion(version).into()),
        };
        if codec != C::ID {
            return Err(FrameError::CodecMismatch {
                found: codec,
                expected: C::NAME,
            }
            .into());
        }
        if flags & !known_flags != 0 {
            return Err(FrameError::UnknownFlags(flags).into());
        }
        // Version 2 frames never set `FLAG_EXPIRES`, so they decode as
        // version 3 frames without an expiry, which they are but for it.
        let unknown = version == VERSION_2;
        let (tags, payload) = if flags & FLAG_TAGS != 0 {
            let (tags, rest) = take_tags(payload)?;
            (Some(tags), rest)
        } else {
            (None, payload)
        };
        let decoded = if flags & FLAG_LZ4 == 0 {
            self.decode_payload(flags, unknown, payload)
        } else {
            self.decode_compressed(flags, unknown, payload)
        };
        let (mut entry, expiry) = decoded?;
        entry.set_tags(tags);
        Ok((entry, expiry))
    }

    #[cfg_attr(not(feature = "compression"), allow(unused_variables))]
    fn decode_compressed<V: DeserializeOwned>(
        &self,
        flags: u8,
        unknown: bool,
        payload: &[u8],
    ) -> Result<(Envelope<V>, Expiry), BoxError> {
        #[cfg(feature = "compression")]
        {
            let plain = decompress(payload, self.max_len)?;
            self.decode_payload(flags, unknown, &plain)
        }
        #[cfg(not(feature = "compression"))]
        Err(FrameError::CompressionUnsupported.into())
    }

    /// The load time, the expiry if the flags say so, then (unless the
    /// flags say "not found") the value.
    fn decode_payload<V: DeserializeOwned>(
        &self,
        flags: u8,
        expiry_unknown: bool,
        payload: &[u8],
    ) -> Result<(Envelope<V>, Expiry), BoxError> {
        let (load_ns, rest) = take_varint(payload)?;
        let (expiry, value) = if flags & FLAG_EXPIRES != 0 {
            let (written_ms, rest) = take_varint(rest)?;
            let (ttl_ms, rest) = take_varint(rest)?;
            (Expiry::At { written_ms, ttl_ms }, rest)
        } else if expiry_unknown {
            (Expiry::Unknown, rest)
        } else {
            (Expiry::Never, rest)
        };
        let entry = if flags & FLAG_NOT_FOUND != 0 {
            if !value.is_empty() {
                return Err(FrameError::Corrupt(format!(
                    "a \"not found\" entry followed by {} bytes",
                    value.len()
                ))
                .into());
            }
            Envelope::not_found()
        } else {
            Envelope::found(self.codec.decode(value)?)
        };
        Ok((entry.with_load_time(Duration::from_nanos(load_ns)), expiry))
    }
}

/// The tag section: the number of tags (one byte), then for each its name's
/// length (one byte), its name, and the version recorded (8 bytes, big
/// endian). Tags are at most 128 bytes and 16 per entry
/// ([`MAX_TAG_LEN`](crate::MAX_TAG_LEN), [`MAX_TAGS`](crate::MAX_TAGS)).
fn put_tags(out: &mut Vec<u8>, tags: &TagStamps) {
    let stamps = tags.stamps();
    out.push(stamps.len() as u8);
    for stamp in stamps {
        let name = stamp.cell.name().as_bytes();
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&stamp.version.to_be_bytes());
    }
}

/// Reads the tag section off the front of `bytes` (see [`put_tags`]): the
/// stamps, on cells that only name their tags, and the rest.
fn take_tags(bytes: &[u8]) -> Result<(TagStamps, &[u8]), FrameError> {
    let corrupt = || FrameError::Corrupt("the entry's tag section is truncated".into());
    let (&count, mut rest) = bytes.split_first().ok_or_else(corrupt)?;
    if count == 0 {
        // Never written: an entry without tags has no tag section.
        return Err(FrameError::Corrupt(
            "the entry's tag section is empty".into(),
        ));
    }
    let mut stamps = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (&len, tail) = rest.split_first().ok_or_else(corrupt)?;
        let len = usize::from(len);
        let name = tail.get(..len).ok_or_else(corrupt)?;
        let name = std::str::from_utf8(name)
            .map_err(|_| FrameError::Corrupt("a tag name is not UTF-8".into()))?;
        let version = tail.get(len..len + 8).ok_or_else(corrupt)?;
        let version = u64::from_be_bytes(version.try_into().map_err(|_| corrupt())?);
        stamps.push(Stamp {
            cell: TagCell::detached(name),
            version,
        });
        rest = &tail[len + 8..];
    }
    Ok((TagStamps::new(stamps), rest))
}

/// Compresses what follows the first `head_len` bytes of `encoded` (the
/// header and any tags) into `packed`, returning it when that saves space.
#[cfg(feature = "compression")]
fn compress<'a>(encoded: &[u8], head_len: usize, packed: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    let (head, payload) = encoded.split_at(head_len);
    let plain_len = u32::try_from(payload.len()).ok()?;
    let start = head_len + LEN_PREFIX;
    packed.clear();
    packed.extend_from_slice(&head[..3]);
    packed.push(head[3] | FLAG_LZ4);
    packed.extend_from_slice(&head[HEADER_LEN..]);
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

    fn framed<V: Serialize>(framing: &Framing<MessagePack>, entry: &Envelope<V>) -> Vec<u8> {
        framing
            .encode(entry, Expiry::Never, <[u8]>::to_vec)
            .unwrap()
    }

    fn decoded(framing: &Framing<MessagePack>, bytes: &[u8]) -> Envelope<String> {
        framing.decode::<String>(bytes).unwrap().0
    }

    fn found(value: &str) -> Envelope<String> {
        Envelope::found(value.to_string())
    }

    fn decode_err(framing: &Framing<MessagePack>, bytes: &[u8]) -> FrameError {
        let err = framing.decode::<String>(bytes).unwrap_err();
        err.downcast_ref::<FrameError>()
            .unwrap_or_else(|| panic!("not a FrameError: {err}"))
            .clone()
    }

    #[test]
    fn header_then_load_time_then_the_value_alone() {
        let framing = Framing::new(MessagePack, None, 1 << 20);
        let entry = found("hi").with_load_time(Duration::from_nanos(300));
        let bytes = framed(&framing, &entry);
        // 300 = 0b10_0101100: LEB128 0xAC 0x02; then MessagePack "hi".
        assert_eq!(
            bytes,
            [
                MAGIC,
                VERSION,
                MessagePack::ID,
                0,
                0xAC,
                0x02,
                0xA2,
                b'h',
                b'i'
            ]
        );
        assert_eq!(
            framing.decode::<String>(&bytes).unwrap(),
            (entry, Expiry::Never)
        );
    }

    #[test]
    fn an_expiring_entry_carries_its_write_time_and_ttl() {
        let framing = Framing::new(MessagePack, None, 1 << 20);
        let entry = found("hi");
        let expiry = Expiry::At {
            written_ms: 300,
            ttl_ms: 5,
        };
        let bytes = framing.encode(&entry, expiry, <[u8]>::to_vec).unwrap();
        assert_eq!(
            bytes,
            [
                MAGIC,
                VERSION,
                MessagePack::ID,
                FLAG_EXPIRES,
                0,
                0xAC,
                0x02,
                5,
                0xA2,
                b'h',
                b'i'
            ]
        );
        assert_eq!(framing.decode::<String>(&bytes).unwrap(), (entry, expiry));
    }

    #[test]
    fn remaining_time_is_clamped_to_the_ttl() {
        let now = unix_ms();
        let fresh = Expiry::At {
            written_ms: now,
            ttl_ms: 60_000,
        };
        let left = fresh.remaining().unwrap().unwrap();
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
        // A writer whose clock is ahead: never more than the TTL.
        let ahead = Expiry::At {
            written_ms: now + 3_600_000,
            ttl_ms: 1_000,
        };
        assert_eq!(ahead.remaining(), Some(Some(Duration::from_secs(1))));
        // Long past (or a writer far behind): due, not negative.
        let past = Expiry::At {
            written_ms: 0,
            ttl_ms: 1_000,
        };
        assert_eq!(past.remaining(), Some(Some(Duration::ZERO)));
        assert_eq!(Expiry::Never.remaining(), Some(None));
        assert_eq!(Expiry::Unknown.remaining(), None);
    }

    #[test]
    fn version_2_frames_are_read_with_an_unknown_expiry() {
        let framing = Framing::new(MessagePack, None, 1 << 20);
        // As cachex wrote them before the expiry joined the header.
        let v2 = [
            MAGIC,
            VERSION_2,
            MessagePack::ID,
            0,
            0xAC,
            0x02,
            0xA2,
            b'h',
            b'i',
        ];
        let entry = found("hi").with_load_time(Duration::from_nanos(300));
        assert_eq!(
            framing.decode::<String>(&v2).unwrap(),
            (entry, Expiry::Unknown)
        );
        let v2_not_found = [MAGIC, VERSION_2, MessagePack::ID, FLAG_NOT_FOUND, 0];
        assert_eq!(
            framing.decode::<String>(&v2_not_found).unwrap(),
            (Envelope::not_found(), Expiry::Unknown)
        );
        // Version 2 had no expiry flag.
        assert_eq!(
            decode_err(
                &framing,
                &[MAGIC, VERSION_2, MessagePack::ID, FLAG_EXPIRES, 0, 0, 0]
            ),
            FrameError::UnknownFlags(FLAG_EXPIRES)
        );
    }

    #[test]
    fn tags_sit_after_the_header_outside_compression_and_round_trip() {
        use crate::tag::{Stamp, TagCell, TagStamps};
        let stamps = TagStamps::new(vec![
            Stamp {
                cell: TagCell::detached("user:7"),
                version: 1 << 40,
            },
            Stamp {
                cell: TagCell::detached("users"),
                version: 7,
            },
        ]);
        let entry = found(&"x".repeat(500)).with_tags(stamps);
        for compress_above in [None, Some(0)] {
            let framing = Framing::new(MessagePack, compress_above, 1 << 20);
            let bytes = framing
                .encode(&entry, Expiry::Never, <[u8]>::to_vec)
                .unwrap();
            assert_ne!(bytes[3] & FLAG_TAGS, 0);
            // Where the Redis store's read script looks: count, then the
            // first name's length and name.
            assert_eq!(&bytes[4..7], &[2, 6, b'u']);
            assert_eq!(&bytes[6..12], b"user:7");
            let (decoded, _) = framing.decode::<String>(&bytes).unwrap();
            assert_eq!(decoded, entry);
        }
        // A tag section with no tags is never written, and refused.
        let framing = Framing::new(MessagePack, None, 1 << 20);
        let empty = [MAGIC, VERSION, MessagePack::ID, FLAG_TAGS, 0, 0, 0xa0];
        assert!(framing.decode::<String>(&empty).is_err());
        // A truncated one too.
        let truncated = [MAGIC, VERSION, MessagePack::ID, FLAG_TAGS, 1, 5, b'a'];
        assert!(framing.decode::<String>(&truncated).is_err());
    }

    #[test]
    fn not_found_is_a_flag_with_no_value() {
        let framing = Framing::new(MessagePack, None, 1 << 20);
        let entry = Envelope::<String>::not_found().with_load_time(Duration::from_millis(3));
        let bytes = framed(&framing, &entry);
        assert_eq!(bytes[3], FLAG_NOT_FOUND);
        assert_eq!(decoded(&framing, &bytes), entry);
        let mut trailing = bytes.clone();
        trailing.push(0xA0);
        assert!(matches!(
            decode_err(&framing, &trailing),
            FrameError::Corrupt(_)
        ));
    }

    #[test]
    fn varints_round_trip_and_overlong_ones_are_refused() {
        for n in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            out.push(0x55);
            assert_eq!(take_varint(&out).unwrap(), (n, &[0x55][..]), "{n}");
        }
        assert!(take_varint(&[]).is_err());
        assert!(take_varint(&[0x80, 0x80]).is_err(), "unterminated");
        assert!(take_varint(&[0xFF; 10]).is_err(), "over 64 bits");
        let mut over = vec![0xFF; 9];
        over.push(0x02);
        assert!(take_varint(&over).is_err(), "bit 64 set");
    }

    #[test]
    fn foreign_bytes_are_refused_not_misread() {
        let framing = Framing::new(MessagePack, None, 1 << 20);
        assert_eq!(decode_err(&framing, b""), FrameError::NotCachex);
        assert_eq!(decode_err(&framing, b"\xCA\x02"), FrameError::NotCachex);
        assert_eq!(decode_err(&framing, b"hello world"), FrameError::NotCachex);
        assert_eq!(
            decode_err(&framing, &[MAGIC, 9, MessagePack::ID, 0, 0, 0xa0]),
            FrameError::UnsupportedVersion(9)
        );
        // Version 1 (the whole envelope through the codec) is not read.
        assert_eq!(
            decode_err(&framing, &[MAGIC, 1, MessagePack::ID, 0, 0x81]),
            FrameError::UnsupportedVersion(1)
        );
        assert_eq!(
            decode_err(&framing, &[MAGIC, VERSION, 2, 0, 0, b'"', b'"']),
            FrameError::CodecMismatch {
                found: 2,
                expected: "msgpack"
            }
        );
        assert_eq!(
            decode_err(&framing, &[MAGIC, VERSION, MessagePack::ID, 0x80, 0, 0xa0]),
            FrameError::UnknownFlags(0x80)
        );
        // A valid header over garbage: the codec's own error.
        let err = framing
            .decode::<String>(&[MAGIC, VERSION, MessagePack::ID, 0, 0, 0xc1])
            .unwrap_err();
        assert!(err.downcast_ref::<FrameError>().is_none());
    }

    #[test]
    fn too_large_is_refused() {
        let framing = Framing::new(MessagePack, None, 16);
        let err = framing
            .encode(&found(&"x".repeat(100)), Expiry::Never, |_| ())
            .unwrap_err();
        assert!(matches!(
            err,
            EncodeError::TooLarge(FrameError::TooLarge { max: 16, .. })
        ));
    }

    #[cfg(feature = "compression")]
    #[test]
    fn compresses_above_the_threshold_only_when_it_helps() {
        let framing = Framing::new(MessagePack, Some(64), 1 << 20);
        let small = framed(&framing, &found(&"a".repeat(10)));
        assert_eq!(small[3], 0);
        let big = found(&"abc".repeat(1000)).with_load_time(Duration::from_secs(2));
        let packed = framed(&framing, &big);
        assert_eq!(packed[3], FLAG_LZ4);
        assert!(packed.len() < 500, "{}", packed.len());
        assert_eq!(decoded(&framing, &packed), big);
    }

    proptest::proptest! {
        #[test]
        fn any_entry_round_trips(
            value in proptest::option::of((
                ".{0,300}",
                proptest::collection::vec(proptest::num::u8::ANY, 0..2000),
                proptest::num::i64::ANY,
            )),
            load_ns in proptest::num::u64::ANY,
            threshold in proptest::option::of(0usize..512),
            expiry in proptest::option::of((proptest::num::u64::ANY, proptest::num::u64::ANY)),
        ) {
            let framing = Framing::new(MessagePack, threshold, 1 << 20);
            let entry = Envelope::from_option(value).with_load_time(Duration::from_nanos(load_ns));
            let expiry = match expiry {
                Some((written_ms, ttl_ms)) => Expiry::At { written_ms, ttl_ms },
                None => Expiry::Never,
            };
            let framed = framing.encode(&entry, expiry, <[u8]>::to_vec).unwrap();
            proptest::prop_assert_eq!(
                framing.decode::<(String, Vec<u8>, i64)>(&framed).unwrap(),
                (entry, expiry)
            );
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
