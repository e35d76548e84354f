//! Conversion between writ's [`Headers`] and rdkafka's header types, so the
//! wire contract in `writ-core` stays free of librdkafka.

use rdkafka::message::{Header, OwnedHeaders};
use writ_core::Headers;

/// writ headers -> rdkafka headers (order and null values kept).
pub fn to_kafka(headers: &Headers) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(headers.len());
    for (key, value) in headers.iter() {
        out = out.insert(Header { key, value });
    }
    out
}

/// rdkafka headers -> writ headers (order and null values kept; non-UTF-8 names made lossy).
pub fn from_kafka<H: rdkafka::message::Headers>(headers: Option<&H>) -> Headers {
    let Some(h) = headers else {
        return Headers::new();
    };
    h.iter()
        .map(|header| (header.key.to_owned(), header.value.map(<[u8]>::to_vec)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_order_duplicates_and_nulls() {
        let mut h = Headers::new();
        h.push("ce_id", "a");
        h.push_null("empty");
        h.push("bin", vec![0u8, 255]);
        h.push("ce_id", "b");
        let k = to_kafka(&h);
        assert_eq!(from_kafka(Some(&k)), h);
        assert_eq!(from_kafka::<OwnedHeaders>(None), Headers::new());
    }
}
