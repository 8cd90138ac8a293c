//! MessagePack, through `rmp-serde`.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Codec;
use crate::BoxError;

/// MessagePack (`rmp-serde`): compact, fast, self-describing. The default
/// codec. Structs are written as maps with their field names, so adding a
/// field with `#[serde(default)]` keeps old entries readable.
#[derive(Clone, Copy, Debug, Default)]
pub struct MessagePack;

impl Codec for MessagePack {
    const ID: u8 = 1;
    const NAME: &'static str = "msgpack";

    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), BoxError> {
        Ok(rmp_serde::encode::write_named(out, value)?)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, BoxError> {
        // Read through a slice that the decoder advances, to see what is
        // left (`from_slice` stops after the value and says nothing).
        let mut rest = bytes;
        let value = T::deserialize(&mut rmp_serde::Deserializer::new(&mut rest))?;
        super::nothing_after(rest.len())?;
        Ok(value)
    }
}
