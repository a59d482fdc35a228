//! [`Codec`]: how arguments and results are encoded when they cross a boundary.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;

/// A payload encoding. Every codec carries the same serde types; they differ in size,
/// speed and what a human can read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// JSON (`serde_json`): the default; readable, and what the payload check uses.
    #[default]
    Json,
    /// MessagePack (`rmp-serde`, structs as maps): compact and self-describing, so
    /// `#[serde(untagged)]`, `flatten` and skipped fields work as with JSON.
    MsgPack,
}

impl Codec {
    /// Every codec.
    pub const ALL: [Codec; 2] = [Codec::Json, Codec::MsgPack];

    /// The codec's name in policy files and logs: `"json"` or `"msgpack"`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::MsgPack => "msgpack",
        }
    }

    /// The codec called `name` (see [`name`](Self::name)).
    pub fn from_name(name: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The codec's byte on the wire (see [`wire`](crate::wire)).
    pub fn to_byte(self) -> u8 {
        match self {
            Codec::Json => 1,
            Codec::MsgPack => 2,
        }
    }

    /// The codec with this wire byte.
    pub fn from_byte(byte: u8) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.to_byte() == byte)
    }

    /// Encodes `value`.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        match self {
            Codec::Json => serde_json::to_vec(value).map_err(|e| CodecError::new(self, e)),
            Codec::MsgPack => rmp_serde::to_vec_named(value).map_err(|e| CodecError::new(self, e)),
        }
    }

    /// Decodes a `T`.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| CodecError::new(self, e)),
            Codec::MsgPack => rmp_serde::from_slice(bytes).map_err(|e| CodecError::new(self, e)),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value that would not encode, or bytes that would not decode.
#[derive(Debug)]
pub struct CodecError {
    codec: Codec,
    message: String,
}

impl CodecError {
    fn new(codec: Codec, e: impl fmt::Display) -> Self {
        Self {
            codec,
            message: e.to_string(),
        }
    }

    /// The codec that failed.
    pub fn codec(&self) -> Codec {
        self.codec
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.codec, self.message)
    }
}

impl std::error::Error for CodecError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Sample {
        name: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        note: Option<String>,
        sizes: Vec<u32>,
    }

    #[test]
    fn both_codecs_round_trip_and_name_themselves() {
        let v = Sample {
            name: "a".into(),
            note: None,
            sizes: vec![1, 2, 3],
        };
        for c in Codec::ALL {
            let bytes = c.encode(&v).unwrap();
            assert_eq!(c.decode::<Sample>(&bytes).unwrap(), v, "{c}");
            assert_eq!(Codec::from_name(c.name()), Some(c));
            assert_eq!(Codec::from_byte(c.to_byte()), Some(c));
        }
        assert!(Codec::from_name("xml").is_none());
    }

    #[test]
    fn json_refuses_non_string_map_keys_and_says_so() {
        let mut m = BTreeMap::new();
        m.insert((1u8, 2u8), 3u8);
        let err = Codec::Json.encode(&m).unwrap_err();
        assert_eq!(err.codec(), Codec::Json);
        assert!(err.to_string().starts_with("json: "), "{err}");
        assert!(Codec::MsgPack.decode::<Sample>(b"\xc1").is_err());
    }
}
