//! Request parsing: the few ping fields a buyer reads ([`PingView`]) and the post body it
//! reads, straight from the bytes with serde, without building a JSON tree. It does not decide
//! anything about a request (`draws`) nor answer it (`handler`).

use std::borrow::Cow;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The ping fields a buyer reads, borrowed from the body where the JSON allows it.
///
/// Reading these four fields straight from the bytes, instead of building a `serde_json::Value`
/// tree of the whole ping, keeps the fleet's CPU per request small (issue #13: the harness must not
/// be what a co-located benchmark measures). The answers are those of the `Value` reading it
/// replaces: any JSON document is accepted, a field that is missing or of another type reads as
/// absent, and a repeated key takes its last value, as `serde_json::Map` does.
#[derive(Debug, Default, PartialEq)]
pub(super) struct PingView<'a> {
    pub(super) auction_id: Option<Cow<'a, str>>,
    pub(super) state: Option<Cow<'a, str>>,
    pub(super) vertical: Option<Cow<'a, str>>,
    pub(super) ai_quality_score: Option<f64>,
}

/// One top-level field's value: a string, a number (as `Value::as_f64` reads it) or anything else.
enum Field<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Other,
}

impl<'a> Field<'a> {
    fn into_str(self) -> Option<Cow<'a, str>> {
        match self {
            Field::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'de>, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Field<'de>, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Field<'de>, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Field<'de>, E> {
                Ok(Field::Num(v as f64))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Field<'de>, E> {
                Ok(Field::Num(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Field<'de>, E> {
                Ok(Field::Num(v))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Field<'de>, E> {
                Ok(Field::Other)
            }
            fn visit_unit<E>(self) -> Result<Field<'de>, E> {
                Ok(Field::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A top-level key of a ping, as far as the buyer cares.
enum Key {
    AuctionId,
    State,
    Vertical,
    AiQualityScore,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "auction_id" => Key::AuctionId,
                    "state" => Key::State,
                    "vertical" => Key::Vertical,
                    "ai_quality_score" => Key::AiQualityScore,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for PingView<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PingView<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON document")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PingView<'de>, A::Error> {
                let mut view = PingView::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::AuctionId => view.auction_id = map.next_value::<Field>()?.into_str(),
                        Key::State => view.state = map.next_value::<Field>()?.into_str(),
                        Key::Vertical => view.vertical = map.next_value::<Field>()?.into_str(),
                        Key::AiQualityScore => {
                            view.ai_quality_score = match map.next_value::<Field>()? {
                                Field::Num(x) => Some(x),
                                _ => None,
                            }
                        }
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(view)
            }
            // A document that is not an object has none of the fields.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PingView<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(PingView::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<PingView<'de>, E> {
                Ok(PingView::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<PingView<'de>, E> {
                Ok(PingView::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<PingView<'de>, E> {
                Ok(PingView::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<PingView<'de>, E> {
                Ok(PingView::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<PingView<'de>, E> {
                Ok(PingView::default())
            }
            fn visit_unit<E>(self) -> Result<PingView<'de>, E> {
                Ok(PingView::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// The post body a buyer reads. The lead must be an object but is skipped unread, never built.
#[derive(Deserialize)]
pub(super) struct PostBody<'a> {
    pub(super) auction_id: String,
    #[serde(borrow)]
    pub(super) bid_token: Cow<'a, str>,
    #[allow(dead_code)]
    lead: AnyObject,
}

/// A JSON object whose contents are skipped: what `serde_json::Map` accepts, without keeping it.
struct AnyObject;

impl<'de> Deserialize<'de> for AnyObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyObject;
            // The words `serde_json::Map` uses, so a wrong lead gets the same 400 detail.
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyObject, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnyObject)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// (auction_id, state, vertical, ai_quality_score) as read from a ping; `None` when refused.
    type Read = Option<(Option<String>, Option<String>, Option<String>, Option<f64>)>;

    /// What the `Value` reading this replaced made of a ping.
    fn by_value(body: &str) -> Read {
        let v: Value = serde_json::from_str(body).ok()?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Some((
            s("auction_id"),
            s("state"),
            s("vertical"),
            v.get("ai_quality_score").and_then(Value::as_f64),
        ))
    }

    fn by_view(body: &str) -> Read {
        let v: PingView = serde_json::from_str(body).ok()?;
        let s = |c: &Option<Cow<str>>| c.as_deref().map(str::to_owned);
        Some((
            s(&v.auction_id),
            s(&v.state),
            s(&v.vertical),
            v.ai_quality_score,
        ))
    }

    #[test]
    fn ping_view_reads_what_a_value_tree_reads() {
        for body in [
            r#"{"auction_id":"auc_1","state":"TX","vertical":"solar","ai_quality_score":0.84}"#,
            r#"{"auction_id":"auc_\u0031","state":"T\"X","extra":{"a":[1,{"b":null}]},"ai_quality_score":1}"#,
            r#"{"auction_id":5,"state":null,"vertical":["x"],"ai_quality_score":"0.9"}"#,
            r#"{"auction_id":"a","auction_id":"b","ai_quality_score":-3}"#,
            r#"{"auction_id":"a","auction_id":7}"#,
            r#"{"auction\u005fid":"escaped key"}"#,
            r#"[1,2,{"auction_id":"x"}]"#,
            r#""auc_1""#,
            "12",
            "null",
            "true",
            "{}",
            "{\"auction_id\": nope",
            r#"{"auction_id":"a"} trailing"#,
            "",
        ] {
            assert_eq!(by_view(body), by_value(body), "{body}");
        }
    }
}
