//! The codec every Convoy service and client uses: prost's, with small
//! initial buffers.
//!
//! tonic gives each streaming call an encode and a decode buffer of 8 KiB
//! up front, kept for the life of the stream. An agent's session is one such
//! stream held for days, carrying heartbeats of a few bytes; at 10,000
//! agents the coordinator held about 160 MiB of those buffers. They start at
//! 512 bytes here and grow as a message needs (a step, a status answer).

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial size of a call's encode and decode buffers.
pub const INITIAL_BUFFER: usize = 512;

/// Past this many buffered bytes an encoder yields to the runtime (tonic's
/// default).
pub const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD)
}

/// [`ProstCodec`] with [`INITIAL_BUFFER`]-byte buffers.
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codec::{Decoder, Encoder};

    #[test]
    fn buffers_start_small() {
        let mut codec = LeanCodec::<crate::v1::Heartbeat, crate::v1::Heartbeat>::default();
        // BufferSettings keeps its fields private; its Debug shows them.
        for s in [codec.encoder().buffer_settings(), codec.decoder().buffer_settings()] {
            let s = format!("{s:?}");
            assert!(s.contains(&format!("buffer_size: {INITIAL_BUFFER}")), "{s}");
            assert!(s.contains(&format!("yield_threshold: {YIELD_THRESHOLD}")), "{s}");
        }
    }
}
