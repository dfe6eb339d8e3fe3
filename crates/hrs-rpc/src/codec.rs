//! The codec every HRS service speaks: prost's encoding, with a malformed message answered
//! as the caller's mistake.
//!
//! tonic's prost codec answers a message that does not decode (truncated, invalid UTF-8 in
//! a string, a bad varint) with `INTERNAL`, which reads as the server's fault and tells the
//! caller nothing it can act on. Here it is `INVALID_ARGUMENT`, with prost's description,
//! which names the message and field (`Run.site: invalid string value: data is not UTF-8
//! encoded`).

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::error::{self, RuntimeError};

/// prost encoding whose decode failures are `INVALID_ARGUMENT` naming the field.
#[derive(Debug, Clone, Default)]
pub struct StrictCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Codec for StrictCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(self.0.decoder())
    }
}

/// Decodes with prost and reports a malformed message as the caller's mistake.
#[derive(Debug, Clone, Default)]
pub struct StrictDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0
            .decode(buf)
            .map_err(|status| error::status(&RuntimeError::Malformed(status.message().into())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
