//! The codec of every generated client and server: prost's, with smaller
//! first buffers than tonic's default.
//!
//! tonic allocates a buffer per call for encoding its messages and one for
//! decoding them, `buffer_size` each (8 KiB by default), and grows them as a
//! message needs. ringkv's messages are mostly small and its streams long
//! lived (a watch, a subscription, a KV pipe), so at 100k open streams the
//! default alone is most of a stream's memory. 1 KiB holds a typical message;
//! larger ones grow the buffer as before.

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// First size of a call's encode and decode buffers.
const BUFFER_BYTES: usize = 1024;
/// tonic's default: how much a stream encodes before it yields to the runtime.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with 1 KiB first buffers (`BUFFER_BYTES`).
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(std::marker::PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD))
    }
}
