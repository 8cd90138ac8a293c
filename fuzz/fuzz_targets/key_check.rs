//! Keys come from users' requests: the check every `Cache` call makes must
//! accept exactly the keys of 1 to `MAX_KEY_LEN` bytes, whatever they hold.
#![no_main]

use cachex::fuzzing::check_key;
use cachex::{Error, MAX_KEY_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|key: &str| {
    match check_key(key) {
        Ok(()) => assert!(!key.is_empty() && key.len() <= MAX_KEY_LEN),
        Err(Error::EmptyKey) => assert!(key.is_empty()),
        Err(Error::KeyTooLong { len, max }) => {
            assert_eq!((len, max), (key.len(), MAX_KEY_LEN));
            assert!(len > MAX_KEY_LEN);
        }
        Err(other) => panic!("unexpected error for a key: {other}"),
    }
});
