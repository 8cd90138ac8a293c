//! JSON, through `serde_json`.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Codec;
use crate::BoxError;

/// JSON (`serde_json`): the largest and slowest of the three, but readable
/// with `redis-cli` (after the 4-byte header) and by other languages.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl Codec for Json {
    const ID: u8 = 2;
    const NAME: &'static str = "json";

    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), BoxError> {
        Ok(serde_json::to_writer(out, value)?)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, BoxError> {
        // Not `from_slice`, which accepts trailing whitespace: nothing may
        // follow the value.
        let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<T>();
        let value = match values.next() {
            Some(value) => value?,
            None => {
                return Err(serde_json::Error::io(std::io::ErrorKind::UnexpectedEof.into()).into())
            }
        };
        super::nothing_after(bytes.len() - values.byte_offset())?;
        Ok(value)
    }
}
