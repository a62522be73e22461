//! Encoding of openraft messages inside the Raft gRPC envelope: postcard over
//! openraft's serde layout. [`FORMAT`] travels in every envelope, so a node running
//! an incompatible encoding (a later openraft) is refused instead of misread.

/// Version of the payload encoding; bump when openraft's serde layout changes.
pub const FORMAT: u32 = 1;

/// Encodes a message.
pub fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(value)
}

/// Decodes a message; garbage is an error, never a panic.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}
