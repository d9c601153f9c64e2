//! The prost codec with one change: a request that cannot be decoded
//! (truncated message, wrong wire type, invalid UTF-8 in a string field) is
//! answered with `INVALID_ARGUMENT` and a message saying what was wrong,
//! rather than tonic's default `INTERNAL`, which would blame the server.

use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder};

/// Codec used by every generated client and server of this crate.
#[derive(Debug, Clone)]
pub struct ApiCodec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for ApiCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    fn default() -> Self {
        Self {
            inner: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for ApiCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = ApiDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ApiDecoder {
            inner: self.inner.decoder(),
        }
    }
}

/// Decoder that maps decode failures to `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct ApiDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U> Decoder for ApiDecoder<U>
where
    U: prost::Message + Default + Send + 'static,
{
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|s| {
            Status::invalid_argument(format!(
                "malformed request message (check field types and that strings are valid UTF-8): {}",
                s.message()
            ))
        })
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        self.inner.buffer_settings()
    }
}
