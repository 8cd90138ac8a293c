//! Entry points for the fuzz targets in `fuzz/`: the crate-private code
//! that bytes and keys from outside reach. Compiled only under
//! `--cfg fuzzing` (which `cargo fuzz` sets), hidden from the docs, and no
//! part of the API.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{Codec, Expiry, Framing};
use crate::store::Envelope;
use crate::{BoxError, Result};

/// Limit on decoded sizes, as a store's `max_value_size`.
const MAX_LEN: usize = 1 << 20;

/// Decodes stored bytes as a Redis store reading them with `codec` does.
pub fn decode_frame<V: DeserializeOwned, C: Codec>(
    codec: C,
    bytes: &[u8],
) -> std::result::Result<Envelope<V>, BoxError> {
    Framing::new(codec, None, MAX_LEN)
        .decode(bytes)
        .map(|(entry, _expiry)| entry)
}

/// Encodes `entry` as a Redis store writing it with `codec` does
/// (compressed above `compress_above` bytes, with the `compression`
/// feature); `None` if it is refused (too large, or the codec failed).
pub fn encode_frame<V: Serialize, C: Codec>(
    codec: C,
    compress_above: Option<usize>,
    entry: &Envelope<V>,
) -> Option<Vec<u8>> {
    Framing::new(codec, compress_above, MAX_LEN)
        .encode(entry, Expiry::Never, <[u8]>::to_vec)
        .ok()
}

/// The key check every `Cache` operation makes.
pub fn check_key(key: &str) -> Result<()> {
    crate::cache::check_key(key)
}
