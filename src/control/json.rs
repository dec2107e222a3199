//! JSON bodies of the ng protocol.
//!
//! rtpengine accepts a JSON object wherever a bencode dictionary is expected (it decides by the
//! body's first byte being `{`) and then answers in JSON. We map JSON onto the same [`Owned`]
//! tree as bencode, so one request parser serves both:
//! - strings → [`Owned::Str`]; integral numbers → [`Owned::Int`]; other numbers (fractions,
//!   integers beyond `i64`) → their decimal text as a string;
//! - `true`/`false` → `Int(1)`/`Int(0)`;
//! - `null` → dropped (object members and list items alike; a top-level `null` → `Str("")`).
//!
//! Object member order is preserved and duplicate members are all kept, so lookups see the
//! first one, as with bencode. Nesting is limited to [`MAX_DEPTH`] like bencode (serde_json's
//! own recursion limit of 128 would also stop runaway nesting before the stack does).
//!
//! Output: [`to_json`] writes an [`Owned`] tree as compact JSON in insertion order; byte
//! strings that are not UTF-8 are converted lossily (U+FFFD).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::bencode::{Owned, MAX_DEPTH};

/// Why a body is not an acceptable JSON document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all (or trailing garbage); the text is serde_json's description.
    #[error("invalid JSON: {0}")]
    Syntax(String),
    /// Arrays/objects nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

const TOO_DEEP_MSG: &str = "rtpanchor: nesting too deep";

/// Parses a JSON document into an [`Owned`] tree (see the module docs for the mapping).
pub fn parse(body: &[u8]) -> Result<Owned, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = OwnedSeed { depth: 0 }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| {
            if e.to_string().starts_with(TOO_DEEP_MSG) {
                JsonError::TooDeep
            } else {
                JsonError::Syntax(e.to_string())
            }
        })?;
    Ok(value.unwrap_or_else(|| Owned::Str(Vec::new())))
}

/// Writes `value` as compact JSON text, preserving dictionary order.
pub fn to_json(value: &Owned) -> Vec<u8> {
    // Serialising our own tree into a Vec cannot fail (no I/O, string keys only); fall back to
    // an empty object rather than panic if serde_json ever disagrees.
    serde_json::to_vec(&JsonView(value)).unwrap_or_else(|_| b"{}".to_vec())
}

/// Nesting-aware visitor that builds an [`Owned`]; `None` stands for JSON `null`.
#[derive(Clone, Copy)]
struct OwnedSeed {
    /// Number of enclosing arrays/objects.
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for OwnedSeed {
    type Value = Option<Owned>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl OwnedSeed {
    fn enter<E: de::Error>(self) -> Result<OwnedSeed, E> {
        if self.depth >= MAX_DEPTH {
            Err(E::custom(TOO_DEEP_MSG))
        } else {
            Ok(OwnedSeed {
                depth: self.depth + 1,
            })
        }
    }
}

impl<'de> Visitor<'de> for OwnedSeed {
    type Value = Option<Owned>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(Owned::Int(i64::from(v))))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(Owned::Int(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(match i64::try_from(v) {
            Ok(i) => Owned::Int(i),
            Err(_) => Owned::Str(v.to_string().into_bytes()),
        }))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // Integral values in i64 range become Int (e.g. 30.0); everything else keeps its text.
        let integral = v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e18;
        Ok(Some(if integral {
            Owned::Int(v as i64)
        } else {
            Owned::Str(v.to_string().into_bytes())
        }))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Owned::str(v)))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Owned::Str(v.into_bytes())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let inner = self.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            if let Some(item) = item {
                items.push(item);
            }
        }
        Ok(Some(Owned::List(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let inner = self.enter()?;
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if let Some(value) = map.next_value_seed(inner)? {
                entries.push((key, value));
            }
        }
        Ok(Some(Owned::Dict(entries)))
    }
}

/// Serialises an [`Owned`] tree as JSON without copying it.
struct JsonView<'a>(&'a Owned);

impl Serialize for JsonView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Owned::Int(i) => s.serialize_i64(*i),
            Owned::Str(b) => s.serialize_str(&String::from_utf8_lossy(b)),
            Owned::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&JsonView(item))?;
                }
                seq.end()
            }
            Owned::Dict(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, &JsonView(v))?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_json_types() {
        let v = parse(
            br#"{"s":"x","i":-3,"big":18446744073709551615,"f":1.5,"fi":30.0,
                "t":true,"fa":false,"n":null,"l":[1,null,"a"],"d":{"k":"v"}}"#,
        )
        .unwrap();
        assert_eq!(v.get("s"), Some(&Owned::str("x")));
        assert_eq!(v.get("i"), Some(&Owned::Int(-3)));
        assert_eq!(v.get("big"), Some(&Owned::str("18446744073709551615")));
        assert_eq!(v.get("f"), Some(&Owned::str("1.5")));
        assert_eq!(v.get("fi"), Some(&Owned::Int(30)));
        assert_eq!(v.get("t"), Some(&Owned::Int(1)));
        assert_eq!(v.get("fa"), Some(&Owned::Int(0)));
        assert_eq!(v.get("n"), None);
        assert_eq!(
            v.get("l"),
            Some(&Owned::List(vec![Owned::Int(1), Owned::str("a")]))
        );
        assert_eq!(v.get("d"), Some(&Owned::dict().with("k", "v")));
        assert_eq!(parse(b"null"), Ok(Owned::Str(Vec::new())));
    }

    #[test]
    fn keeps_member_order_and_first_duplicate() {
        let v = parse(br#"{"z":1,"a":2,"z":3}"#).unwrap();
        let keys: Vec<&str> = v
            .as_dict()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["z", "a", "z"]);
        assert_eq!(v.get("z"), Some(&Owned::Int(1)));
    }

    #[test]
    fn rejects_bad_documents() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\":}",
            b"{} x",
            b"{\"a\":1,}",
            b"\xff",
            b"{\"a\":\"\xff\"}",
        ] {
            assert!(
                matches!(parse(bad), Err(JsonError::Syntax(_))),
                "{}",
                bad.escape_ascii()
            );
        }
        // Trailing whitespace is fine.
        assert!(parse(b"{} \n").is_ok());
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(parse(deep.as_bytes()), Err(JsonError::TooDeep));
        // 60 KB of '[' (unterminated) and of nested objects: an error, not a stack overflow.
        let huge = vec![b'['; 60 * 1024];
        assert!(parse(&huge).is_err());
        let objs = "{\"a\":".repeat(20_000);
        assert_eq!(parse(objs.as_bytes()), Err(JsonError::TooDeep));
    }

    #[test]
    fn writes_json_in_order() {
        let r = Owned::dict()
            .with("sdp", "v=0\r\n\"q\"")
            .with("result", "ok")
            .with("n", -1i64)
            .with("l", Owned::List(vec![Owned::Int(1), Owned::dict()]));
        assert_eq!(
            String::from_utf8(to_json(&r)).unwrap(),
            r#"{"sdp":"v=0\r\n\"q\"","result":"ok","n":-1,"l":[1,{}]}"#
        );
        assert_eq!(
            to_json(&Owned::bytes(b"a\xffb")),
            "\"a\u{fffd}b\"".as_bytes()
        );
    }

    #[test]
    fn round_trip_through_json() {
        let tree = Owned::dict()
            .with("command", "offer")
            .with("flags", Owned::List(vec![Owned::str("trust-address")]))
            .with("delete-delay", 0i64)
            .with("nested", Owned::dict().with("x", Owned::list()));
        assert_eq!(parse(&to_json(&tree)), Ok(tree));
    }
}
