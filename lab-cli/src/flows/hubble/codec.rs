//! The gRPC codec of the Observer service: prost's encoding, and a decoder
//! that refuses a message carrying a field labctl's copy of Hubble's schema
//! does not know (a newer client's filter, say), instead of dropping it
//! silently as protobuf decoders do.

use std::marker::PhantomData;

use prost::{Message, Name, bytes::Buf as _};
use prost_reflect::{DynamicMessage, ReflectMessage as _, Value};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder},
};
use tonic_prost::ProstEncoder;

/// prost's codec with the strict decoder.
#[derive(Debug)]
pub struct StrictCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        StrictCodec(PhantomData)
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(PhantomData)
    }
}

/// Decodes `U`, refusing fields the schema does not have.
#[derive(Debug)]
pub struct StrictDecoder<U>(PhantomData<U>);

impl<U: Message + Name + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        if let Some(unknown) = unknown_field(&U::full_name(), &bytes)? {
            return Err(Status::invalid_argument(format!(
                "the message sets {unknown}, which labctl's copy of Hubble's schema does not have, so labctl cannot honour it; leave that option out"
            )));
        }
        U::decode(bytes)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("not a valid {}: {e}", U::full_name())))
    }
}

/// The first field of `bytes` (a `name` message) or of a message inside it
/// that the schema does not have, as `field number N of flow.FlowFilter`.
pub fn unknown_field(name: &str, bytes: &[u8]) -> Result<Option<String>, Status> {
    let desc = super::descriptor(name).map_err(|e| Status::internal(e.to_string()))?;
    let message = DynamicMessage::decode(desc, bytes)
        .map_err(|e| Status::invalid_argument(format!("not a valid {name}: {e}")))?;
    Ok(first_unknown(&message))
}

fn first_unknown(message: &DynamicMessage) -> Option<String> {
    if let Some(u) = message.unknown_fields().next() {
        return Some(format!(
            "field number {} of {}",
            u.number(),
            message.descriptor().full_name()
        ));
    }
    message.fields().find_map(|(_, value)| match value {
        Value::Message(m) => first_unknown(m),
        Value::List(items) => items.iter().find_map(|i| match i {
            Value::Message(m) => first_unknown(m),
            _ => None,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::hubble::pb::{flow::FlowFilter, observer::GetFlowsRequest};

    #[test]
    fn a_field_the_schema_does_not_have_is_named_not_dropped() {
        let known = GetFlowsRequest {
            follow: true,
            whitelist: vec![FlowFilter {
                verdict: vec![2],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            unknown_field("observer.GetFlowsRequest", &known.encode_to_vec()).unwrap(),
            None
        );
        // A newer client's filter: verdict DROPPED (field 5, varint 2) and
        // a field 77 (tag 77 << 3 = 0xe8 0x04, varint 1), in the whitelist
        // (field 6, length-delimited).
        let filter = [0x28, 0x02, 0xe8, 0x04, 0x01];
        let mut request = vec![0x32, 5];
        request.extend(filter);
        let said = unknown_field("observer.GetFlowsRequest", &request)
            .unwrap()
            .unwrap();
        assert_eq!(said, "field number 77 of flow.FlowFilter");
    }
}
