//! Encoding of openraft messages inside the Raft gRPC envelope: postcard over
//! openraft's serde layout. [`FORMAT`] travels in every envelope, so a node running
//! an incompatible encoding (a later openraft) is refused instead of misread.
//!
//! Every postcard decode of bytes from the network or the disk goes through
//! [`decode`], [`decode_all`] or [`take_from_bytes`], whose reader
//! (`Guarded`) keeps a claimed sequence length from making the decoder hold
//! far more than it was given.

use postcard::de_flavors::{Flavor, Slice};

/// Version of the payload encoding; bump when openraft's serde layout changes.
pub const FORMAT: u32 = 1;

/// A sequence is preallocated only if its claimed element count is at most the
/// bytes left divided by this (see [`Guarded`]).
const BYTES_PER_PREALLOCATED_ELEMENT: usize = 16;

/// Encodes a message.
pub fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(value)
}

/// Decodes a message; garbage is an error, never a panic. Trailing bytes are
/// ignored (a later encoding may append fields).
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    take_from_bytes(bytes).map(|(value, _)| value)
}

/// Decodes a value that must take exactly `bytes`: trailing bytes are refused
/// (`DeserializeBadEncoding`), so a framing mistake does not go unnoticed.
pub fn decode_all<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    match take_from_bytes(bytes)? {
        (value, []) => Ok(value),
        _ => Err(postcard::Error::DeserializeBadEncoding),
    }
}

/// Decodes a value from the front of `bytes`; returns it and the bytes after it.
pub fn take_from_bytes<'de, T: serde::Deserialize<'de>>(
    bytes: &'de [u8],
) -> Result<(T, &'de [u8]), postcard::Error> {
    let mut deserializer = postcard::Deserializer::from_flavor(Guarded(Slice::new(bytes)));
    let value = T::deserialize(&mut deserializer)?;
    Ok((value, deserializer.finalize()?))
}

/// postcard's slice reader, with a smaller size hint.
///
/// postcard lets serde preallocate a sequence's claimed element count whenever
/// that count fits in the bytes left (serde caps it at 1 MiB a sequence). The
/// count only promises a byte per element, but each costs `size_of::<T>()`:
/// about 100 bytes for an [`Op`](crate::command::Op) or a log entry, so 10 KB
/// claiming ten thousand ops made a decoder hold 1 MB, and every sequence
/// being decoded at once (entries, then ops inside one) could hold its own
/// MiB. Reporting a sixteenth of the bytes left keeps preallocation for real
/// messages (whose elements take more than 16 bytes each) and holds a claimed
/// count to `size_of::<T>() / 16` bytes per input byte; shorter elements still
/// decode, into a `Vec` that grows as they arrive.
///
/// Maps are not covered: postcard reports a map's claimed length whatever
/// the reader says (serde then caps a `HashMap`'s preallocation at 1 MiB).
/// Every decoded type uses `BTreeMap`/`BTreeSet`, which preallocate nothing;
/// keep it so.
struct Guarded<'de>(Slice<'de>);

impl<'de> Flavor<'de> for Guarded<'de> {
    type Remainder = &'de [u8];
    type Source = &'de [u8];

    fn pop(&mut self) -> postcard::Result<u8> {
        self.0.pop()
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint().map(|left| left / BYTES_PER_PREALLOCATED_ELEMENT)
    }

    fn try_take_n(&mut self, count: usize) -> postcard::Result<&'de [u8]> {
        self.0.try_take_n(count)
    }

    fn finalize(self) -> postcard::Result<&'de [u8]> {
        self.0.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_trailing_bytes_are_refused_only_by_decode_all() {
        let value: Vec<(u64, Vec<u8>)> = vec![(1, vec![]), (u64::MAX, vec![7; 300])];
        let mut bytes = encode(&value).expect("encodes");
        assert_eq!(decode::<Vec<(u64, Vec<u8>)>>(&bytes), Ok(value.clone()));
        assert_eq!(decode_all::<Vec<(u64, Vec<u8>)>>(&bytes), Ok(value.clone()));
        bytes.push(0);
        assert_eq!(decode::<Vec<(u64, Vec<u8>)>>(&bytes), Ok(value));
        assert_eq!(decode_all::<Vec<(u64, Vec<u8>)>>(&bytes), Err(postcard::Error::DeserializeBadEncoding));
    }

    #[test]
    fn sequences_of_one_byte_elements_still_decode() {
        let value: Vec<u16> = (0..100).collect();
        let bytes = encode(&value).expect("encodes");
        assert_eq!(decode_all::<Vec<u16>>(&bytes), Ok(value));
    }
}
