//! Postcard, a compact non-self-describing binary format.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Codec;
use crate::BoxError;

/// Postcard: the most compact encoding (varints, no field names), and fast.
/// Not self-describing: the reader must use the same type as the writer
/// (adding a field breaks old entries), and serde features that need a
/// self-describing format (`#[serde(untagged)]`, `flatten`,
/// `serde_json::Value`) do not work.
#[derive(Clone, Copy, Debug, Default)]
pub struct Postcard;

impl Codec for Postcard {
    const ID: u8 = 3;
    const NAME: &'static str = "postcard";

    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), BoxError> {
        // `to_extend` takes the buffer by value; hand it over and take it back
        // so the caller's capacity is reused.
        let buffer = std::mem::take(out);
        *out = postcard::to_extend(value, buffer)?;
        Ok(())
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, BoxError> {
        // `from_bytes` ignores what follows the value.
        let (value, rest) = postcard::take_from_bytes(bytes)?;
        super::nothing_after(rest.len())?;
        Ok(value)
    }
}
