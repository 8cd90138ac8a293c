//! Stored bytes from anywhere (another program, a corrupt value, an
//! attacker with write access to Redis) go through the frame decoder: it
//! must never panic, and whatever it accepts must survive a round trip
//! through the encoder, with every codec and with compression.
#![no_main]

use cachex::codec::{Codec, Json, MessagePack, Postcard};
use cachex::fuzzing::{decode_frame, encode_frame};
use cachex::Envelope;
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

/// A value with the shapes users cache: strings, bytes, options, enums,
/// nesting. No floats: NaN would break the equality check.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Value {
    name: String,
    bytes: Vec<u8>,
    age: Option<u32>,
    role: Role,
    tags: Vec<(u16, String)>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Role {
    Guest,
    Member { since: u64 },
    Admin(String),
}

fn round_trip<V, C>(codec: C, bytes: &[u8])
where
    V: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    C: Codec + Copy,
{
    let Ok(entry) = decode_frame::<V, C>(codec, bytes) else {
        return;
    };
    // Nothing may follow the value: one byte more is refused (the LZ4
    // block of a compressed frame has its own length check).
    let compressed = bytes[3] & 1 != 0;
    if !compressed {
        let longer = [bytes, &[0]].concat();
        assert!(
            decode_frame::<V, C>(codec, &longer).is_err(),
            "{}: a byte after the value was accepted",
            C::NAME
        );
    }
    for compress_above in [None, Some(0)] {
        let encoded =
            encode_frame(codec, compress_above, &entry).expect("a decoded value encodes again");
        let again: Envelope<V> = decode_frame(codec, &encoded).expect("an encoded value decodes");
        assert_eq!(again, entry);
    }
}

fuzz_target!(|bytes: &[u8]| {
    round_trip::<Value, _>(MessagePack, bytes);
    round_trip::<String, _>(MessagePack, bytes);
    round_trip::<Value, _>(Json, bytes);
    round_trip::<Value, _>(Postcard, bytes);
    round_trip::<Vec<u64>, _>(Postcard, bytes);
});
