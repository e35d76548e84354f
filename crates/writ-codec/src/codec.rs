//! Payload bytes <-> plain JSON per `content-type`: what the ingress produces,
//! what the worker consumes, and the status events both of them exchange.

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use schema_registry_converter::schema_registry_common::get_payload;
use writ_core::StatusEvent;

use crate::catalog::{CommandSchema, SchemaCatalog};
use crate::error::CodecError;
use crate::json::{avro_into_json, avro_to_json, json_to_avro, ValidationErrors};
use crate::registry::{Registry, RegistrySettings};
use crate::status_avro;

/// How a payload is encoded on the wire (writ-core's content type).
pub type PayloadFormat = writ_core::ContentType;

/// Confluent framing: magic byte 0, then a 4-byte big-endian schema id.
const FRAMING_LEN: usize = 5;

/// An encoded payload and the headers that describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPayload {
    /// The record value.
    pub bytes: Vec<u8>,
    /// The `content-type` header: `application/json` or `application/avro`.
    pub content_type: &'static str,
    /// The `ce_dataschema` header.
    pub dataschema: Option<String>,
}

/// Encodes and decodes command payloads and status events.
#[derive(Debug)]
pub struct PayloadCodec {
    catalog: SchemaCatalog,
    registry: Option<Registry>,
    /// Whether the catalog's status schema is the layout the direct status
    /// encoder writes (it is, unless a schema directory changed it).
    direct_status: bool,
}

impl PayloadCodec {
    /// A codec over `catalog`; with `registry`, Avro uses Confluent framing.
    pub fn new(
        catalog: SchemaCatalog,
        registry: Option<RegistrySettings>,
    ) -> Result<Self, CodecError> {
        let registry = registry.as_ref().map(Registry::new).transpose()?;
        let direct_status = catalog
            .status_schema()
            .is_ok_and(|s| status_avro::layout_matches(s.schema()));
        Ok(Self {
            catalog,
            registry,
            direct_status,
        })
    }

    /// The catalog this codec validates against.
    pub fn catalog(&self) -> &SchemaCatalog {
        &self.catalog
    }

    /// Whether Avro payloads use registry framing.
    pub fn uses_registry(&self) -> bool {
        self.registry.is_some()
    }

    fn schema(&self, command_type: &str) -> Result<&CommandSchema, CodecError> {
        self.catalog
            .get(command_type)
            .ok_or_else(|| CodecError::UnknownType(command_type.to_string()))
    }

    /// Validates `payload` against the command type's schema and encodes it.
    ///
    /// JSON output is canonical: defaults filled, keys in a stable order,
    /// timestamps as RFC 3339, so equal commands fingerprint equally.
    pub async fn encode(
        &self,
        command_type: &str,
        payload: &serde_json::Value,
        format: PayloadFormat,
    ) -> Result<EncodedPayload, CodecError> {
        let schema = self.schema(command_type)?;
        let value = json_to_avro(schema.schema(), payload)?;
        self.encode_value(schema, value, format).await
    }

    /// Encodes a value [`json_to_avro`] already validated against the command
    /// type's schema, without validating it again.
    pub async fn encode_validated(
        &self,
        command_type: &str,
        value: Value,
        format: PayloadFormat,
    ) -> Result<EncodedPayload, CodecError> {
        let schema = self.schema(command_type)?;
        self.encode_value(schema, value, format).await
    }

    async fn encode_value(
        &self,
        schema: &CommandSchema,
        value: Value,
        format: PayloadFormat,
    ) -> Result<EncodedPayload, CodecError> {
        match format {
            PayloadFormat::Json => Ok(EncodedPayload {
                bytes: canonical_json(&value)?,
                content_type: PayloadFormat::Json.as_str(),
                dataschema: Some(schema.dataschema()),
            }),
            PayloadFormat::Avro => {
                let (bytes, dataschema) = self.encode_avro(schema, value).await?;
                Ok(EncodedPayload {
                    bytes,
                    content_type: PayloadFormat::Avro.as_str(),
                    dataschema: Some(dataschema),
                })
            }
        }
    }

    /// Decodes a payload to plain JSON and validates it against the command type.
    pub async fn decode(
        &self,
        command_type: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<serde_json::Value, CodecError> {
        let schema = self.schema(command_type)?;
        let value = self.decode_value(schema, content_type, bytes).await?;
        Ok(avro_into_json(value))
    }

    /// Encodes a status event per `schemas/writ/status-event.avsc`.
    ///
    /// Avro timestamps are milliseconds: sub-millisecond precision is dropped.
    pub async fn encode_status(
        &self,
        event: &StatusEvent,
        format: PayloadFormat,
    ) -> Result<Vec<u8>, CodecError> {
        match format {
            PayloadFormat::Json => serde_json::to_vec(event)
                .map_err(|e| CodecError::Schema(format!("status event to JSON: {e}"))),
            PayloadFormat::Avro => {
                let schema = self.catalog.status_schema()?;
                if self.direct_status {
                    if let Some(datum) = status_avro::encode(event) {
                        return Ok(self.frame_avro(schema, datum).await?.0);
                    }
                }
                self.encode_status_generic(schema, event).await
            }
        }
    }

    /// The reference status encoding: event -> JSON -> Avro value -> datum.
    async fn encode_status_generic(
        &self,
        schema: &CommandSchema,
        event: &StatusEvent,
    ) -> Result<Vec<u8>, CodecError> {
        let json = serde_json::to_value(event)
            .map_err(|e| CodecError::Schema(format!("status event to JSON: {e}")))?;
        let value = json_to_avro(schema.schema(), &json)?;
        Ok(self.encode_avro(schema, value).await?.0)
    }

    /// Decodes a status event written by [`PayloadCodec::encode_status`].
    pub async fn decode_status(
        &self,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<StatusEvent, CodecError> {
        let schema = self.catalog.status_schema()?;
        let value = self.decode_value(schema, content_type, bytes).await?;
        serde_json::from_value(avro_into_json(value))
            .map_err(|e| CodecError::Validation(ValidationErrors::single("$", e.to_string())))
    }

    /// Bytes -> Avro value of `schema`, for any supported content type.
    async fn decode_value(
        &self,
        schema: &CommandSchema,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<Value, CodecError> {
        match PayloadFormat::parse(content_type) {
            Some(PayloadFormat::Json) => {
                let json: serde_json::Value = serde_json::from_slice(bytes)
                    .map_err(|e| CodecError::Malformed(format!("not valid JSON: {e}")))?;
                Ok(json_to_avro(schema.schema(), &json)?)
            }
            Some(PayloadFormat::Avro) => match &self.registry {
                None => read_datum(schema.schema(), None, bytes),
                Some(registry) => {
                    let (id, datum) = split_framing(bytes)?;
                    let writer = registry.writer_schema(id).await?;
                    read_datum(&writer, Some(schema.schema()), datum)
                }
            },
            None => Err(CodecError::UnsupportedContentType(content_type.to_string())),
        }
    }

    /// Avro value -> datum, framed when a registry is configured; also
    /// returns the `ce_dataschema` to send with it.
    async fn encode_avro(
        &self,
        schema: &CommandSchema,
        value: Value,
    ) -> Result<(Vec<u8>, String), CodecError> {
        let datum = GenericDatumWriter::builder(schema.schema())
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            // The value was built from this very schema, so this is a bug.
            .map_err(|e| CodecError::Schema(format!("{}: {e}", schema.command_type())))?;
        self.frame_avro(schema, datum).await
    }

    /// A datum of `schema`, framed when a registry is configured; also
    /// returns the `ce_dataschema` to send with it.
    async fn frame_avro(
        &self,
        schema: &CommandSchema,
        datum: Vec<u8>,
    ) -> Result<(Vec<u8>, String), CodecError> {
        match &self.registry {
            None => Ok((datum, schema.dataschema())),
            Some(registry) => {
                let id = registry.id_for(schema).await?;
                Ok((get_payload(id, datum), registry.dataschema(id)))
            }
        }
    }
}

/// The canonical JSON bytes of a validated value.
fn canonical_json(value: &Value) -> Result<Vec<u8>, CodecError> {
    serde_json::to_vec(&avro_to_json(value))
        .map_err(|e| CodecError::Schema(format!("canonical JSON: {e}")))
}

/// Splits Confluent framing into (schema id, datum).
fn split_framing(bytes: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    if bytes.len() < FRAMING_LEN {
        return Err(CodecError::Malformed(format!(
            "{} bytes is shorter than the {FRAMING_LEN}-byte schema registry header",
            bytes.len()
        )));
    }
    if bytes[0] != 0 {
        return Err(CodecError::Malformed(format!(
            "magic byte is {:#04x}, expected 0x00 (schema registry framing)",
            bytes[0]
        )));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[FRAMING_LEN..]))
}

/// Reads exactly one datum: a short read and leftover bytes are both malformed.
fn read_datum(writer: &Schema, reader: Option<&Schema>, bytes: &[u8]) -> Result<Value, CodecError> {
    let datum_reader = GenericDatumReader::builder(writer)
        .maybe_reader_schema(reader)
        .build()
        .map_err(|e| CodecError::Malformed(format!("writer schema does not resolve: {e}")))?;
    let mut input = StrictInput {
        rest: bytes,
        hit_end: false,
    };
    let value = datum_reader.read_value(&mut input);
    // apache-avro reads a union index cut off by the end of input as null,
    // so a read past the end is a truncation even when decoding "succeeded".
    if input.hit_end {
        return Err(CodecError::Malformed(format!(
            "truncated Avro datum ({} bytes)",
            bytes.len()
        )));
    }
    let value = value.map_err(|e| CodecError::Malformed(format!("invalid Avro datum: {e}")))?;
    if !input.rest.is_empty() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes after the Avro datum",
            input.rest.len()
        )));
    }
    Ok(value)
}

/// A byte slice reader that remembers whether anyone read past its end.
struct StrictInput<'a> {
    rest: &'a [u8],
    hit_end: bool,
}

impl std::io::Read for StrictInput<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !buf.is_empty() && self.rest.is_empty() {
            self.hit_end = true;
        }
        self.rest.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use serde_json::json;
    use time::macros::datetime;
    use writ_core::{StatusError, SubmissionState};

    fn codec() -> PayloadCodec {
        PayloadCodec::new(SchemaCatalog::builtin(), None).unwrap()
    }

    fn examples() -> Vec<(&'static str, serde_json::Value)> {
        vec![
            (
                "customer.upsert.v1",
                json!({"customer_id": "c-1", "name": "Ada Lovelace", "email": "ada@example.com",
                    "phone": "+31201234567", "tier": "GOLD", "seq": 3, "tax_id": "NL0001",
                    "address": {"street": "Main 1", "city": "Utrecht", "postal_code": "3511 AB", "country": "NL"}}),
            ),
            ("customer.delete.v1", json!({"customer_id": "c-1"})),
            (
                "order.place.v1",
                json!({"order_id": "o-1", "customer_id": "c-1", "seq": 1, "lines": [
                    {"sku": "SKU-1", "quantity": 2, "unit_price_cents": 1999},
                    {"sku": "SKU-2", "quantity": 1, "unit_price_cents": 500}]}),
            ),
        ]
    }

    pub(crate) fn status(all: bool) -> StatusEvent {
        let some = |s: &str| all.then(|| s.to_string());
        StatusEvent {
            submission_id: writ_core::submission_id("/tenants/acme/crm", "k-1"),
            source: "/tenants/acme/crm".into(),
            id: "k-1".into(),
            command_type: "customer.upsert.v1".into(),
            subject: some("c-1"),
            state: if all {
                SubmissionState::Rejected
            } else {
                SubmissionState::Accepted
            },
            canonical_id: some("C000001"),
            master_version: all.then_some(42),
            error: all.then(|| StatusError {
                code: "VALIDATION".into(),
                message: "bad email".into(),
                retryable: false,
            }),
            attempts: if all { 3 } else { 0 },
            payload_fingerprint: "e3b0c442".into(),
            accepted_at: datetime!(2026-11-27 10:00:00.123 UTC),
            applied_at: all.then_some(datetime!(2026-11-27 10:00:01.5 UTC)),
            stale_after: all.then_some(datetime!(2026-11-27 11:00:00 UTC)),
            job_id: some("job-9"),
            job_line: all.then_some(17),
            draft_id: some("d-1"),
            temp_id: some("t-1"),
        }
    }

    #[tokio::test]
    async fn every_example_round_trips_in_both_formats() {
        let c = codec();
        for (t, payload) in examples() {
            let canonical = c
                .decode(
                    t,
                    "application/json",
                    &serde_json::to_vec(&payload).unwrap(),
                )
                .await
                .unwrap();
            for format in [PayloadFormat::Json, PayloadFormat::Avro] {
                let enc = c.encode(t, &payload, format).await.unwrap();
                assert_eq!(enc.content_type, format.as_str());
                assert_eq!(
                    enc.dataschema.as_deref(),
                    Some(format!("urn:writ:schema:{t}").as_str())
                );
                let back = c.decode(t, enc.content_type, &enc.bytes).await.unwrap();
                assert_eq!(back, canonical, "{t} {format:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_validated_value_encodes_as_its_canonical_json_does() {
        // The ingress validates once and encodes that value; the bytes must be
        // those of encoding the canonical JSON, which the worker fingerprints.
        let c = codec();
        let mut values: Vec<(&str, Value)> = examples()
            .into_iter()
            .map(|(t, p)| (t, json_to_avro(c.schema(t).unwrap().schema(), &p).unwrap()))
            .collect();
        let status_schema = c.catalog().status_schema().unwrap();
        let event = serde_json::to_value(status(true)).unwrap();
        values.push((
            "status",
            json_to_avro(status_schema.schema(), &event).unwrap(),
        ));
        for (t, value) in values {
            let canonical = avro_to_json(&value);
            assert_eq!(avro_into_json(value.clone()), canonical, "{t}");
            if t == "status" {
                continue;
            }
            for format in [PayloadFormat::Json, PayloadFormat::Avro] {
                let direct = c.encode_validated(t, value.clone(), format).await.unwrap();
                let again = c.encode(t, &canonical, format).await.unwrap();
                assert_eq!(direct, again, "{t} {format:?}");
            }
        }
    }

    #[tokio::test]
    async fn payloads_stay_small_and_json_is_canonical() {
        let c = codec();
        for (t, payload) in examples() {
            let avro = c.encode(t, &payload, PayloadFormat::Avro).await.unwrap();
            assert!(avro.bytes.len() < 200, "{t}: {} bytes", avro.bytes.len());
        }
        let a = c
            .encode(
                "customer.delete.v1",
                &json!({"customer_id": "c"}),
                PayloadFormat::Json,
            )
            .await
            .unwrap();
        let b = c
            .encode(
                "customer.delete.v1",
                &json!({"reason": null, "customer_id": "c"}),
                PayloadFormat::Json,
            )
            .await
            .unwrap();
        assert_eq!(a.bytes, b.bytes);
        assert_eq!(a.bytes, br#"{"customer_id":"c","reason":null}"#);
    }

    #[tokio::test]
    async fn bad_input_is_classified() {
        let c = codec();
        let e = c
            .encode("nope.v1", &json!({}), PayloadFormat::Json)
            .await
            .unwrap_err();
        assert!(matches!(e, CodecError::UnknownType(_)));
        let e = c
            .encode(
                "customer.delete.v1",
                &json!({"customer_id": 1}),
                PayloadFormat::Avro,
            )
            .await
            .unwrap_err();
        assert!(e.validation_errors().unwrap().has_path("$.customer_id"));
        let e = c
            .decode("customer.delete.v1", "text/plain", b"{}")
            .await
            .unwrap_err();
        assert!(matches!(e, CodecError::UnsupportedContentType(_)));
        let e = c
            .decode("customer.delete.v1", "application/cloudevents+json", b"{}")
            .await
            .unwrap_err();
        assert!(matches!(e, CodecError::UnsupportedContentType(_)));
        let e = c
            .decode(
                "customer.delete.v1",
                "application/json",
                b"{\"customer_id\":",
            )
            .await
            .unwrap_err();
        assert!(matches!(e, CodecError::Malformed(_)));
        let e = c
            .decode(
                "customer.delete.v1",
                "application/json; charset=utf-8",
                br#"{"customer_id":5}"#,
            )
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "payload does not match its schema: $.customer_id: expected string, got number"
        );
    }

    #[tokio::test]
    async fn truncated_and_trailing_avro_are_malformed() {
        let c = codec();
        let (t, payload) = examples().remove(0);
        let enc = c.encode(t, &payload, PayloadFormat::Avro).await.unwrap();
        for cut in [0, 1, enc.bytes.len() / 2, enc.bytes.len() - 1] {
            let e = c
                .decode(t, "application/avro", &enc.bytes[..cut])
                .await
                .unwrap_err();
            assert!(matches!(e, CodecError::Malformed(_)), "cut {cut}: {e}");
        }
        let mut long = enc.bytes.clone();
        long.extend_from_slice(&[0, 0]);
        let e = c.decode(t, "application/avro", &long).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed payload: 2 trailing bytes after the Avro datum"
        );
        assert!(e.is_poison());
        // Cut right before a trailing union: apache-avro alone would read null.
        let e = c
            .decode("customer.delete.v1", "application/avro", &[2, b'c'])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    #[tokio::test]
    async fn random_bytes_never_panic() {
        let c = codec();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for i in 0..3000 {
            let len = rng.random_range(0..64);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let (t, _) = &examples()[i % 3];
            for ct in ["application/avro", "application/json"] {
                let _ = c.decode(t, ct, &bytes).await;
            }
            let _ = c.decode_status("application/avro", &bytes).await;
        }
    }

    #[tokio::test]
    async fn status_events_round_trip_set_and_unset() {
        let c = codec();
        for all in [true, false] {
            let event = status(all);
            for format in [PayloadFormat::Json, PayloadFormat::Avro] {
                let bytes = c.encode_status(&event, format).await.unwrap();
                let back = c.decode_status(format.as_str(), &bytes).await.unwrap();
                assert_eq!(back, event, "all={all} {format:?}");
            }
        }
        let e = c
            .decode_status("application/json", br#"{"source": 1}"#)
            .await
            .unwrap_err();
        assert!(e.validation_errors().unwrap().has_path("$.source"));
    }

    /// Events covering every optional field set and unset, every state,
    /// non-ASCII and long strings, extreme numbers and awkward timestamps.
    fn status_variants() -> Vec<StatusEvent> {
        let mut out = vec![status(true), status(false)];
        for state in SubmissionState::ALL {
            for all in [true, false] {
                out.push(StatusEvent {
                    state,
                    ..status(all)
                });
            }
        }
        // Each optional field alone set, and alone unset.
        let setters: [fn(&mut StatusEvent, bool); 10] = [
            |e, s| e.subject = s.then(|| "sübject-✓".into()),
            |e, s| e.canonical_id = s.then(|| "C-日本語".into()),
            |e, s| e.master_version = s.then_some(-1),
            |e, s| {
                e.error = s.then(|| StatusError {
                    code: "".into(),
                    message: "naïve 🚀 ".repeat(40),
                    retryable: true,
                })
            },
            |e, s| e.applied_at = s.then_some(datetime!(1969-12-31 23:59:59.999_5 UTC)),
            |e, s| e.stale_after = s.then_some(datetime!(2100-01-01 0:00:00.000_000_001 +05:30)),
            |e, s| e.job_id = s.then(|| "job/ä".into()),
            |e, s| e.job_line = s.then_some(i64::MAX),
            |e, s| e.draft_id = s.then(String::new),
            |e, s| e.temp_id = s.then(|| "x".repeat(10_000)),
        ];
        for (i, _) in setters.iter().enumerate() {
            for all in [true, false] {
                let mut e = status(all);
                for (j, set) in setters.iter().enumerate() {
                    set(&mut e, (i == j) != all);
                }
                out.push(e);
            }
        }
        let numbers = [
            (i64::MIN, 0u32),
            (i64::MAX, 1),
            (-64, 63),
            (63, 64),
            (64, 8191),
            (-65, 8192),
            (0, i32::MAX as u32),
        ];
        for (n, attempts) in numbers {
            let mut e = status(true);
            e.master_version = Some(n);
            e.job_line = Some(n.wrapping_neg());
            e.attempts = attempts;
            out.push(e);
        }
        let times = [
            datetime!(1970-01-01 0:00:00 UTC),
            datetime!(1969-12-31 23:59:59.000_000_001 UTC),
            datetime!(1900-06-30 12:34:56.789_999 UTC),
            datetime!(2026-11-27 10:00:00.123_456_789 -08:00),
            datetime!(0001-01-01 0:00:00 UTC),
            datetime!(9999-12-31 23:59:59.999 UTC),
        ];
        for t in times {
            let mut e = status(true);
            e.accepted_at = t;
            e.applied_at = Some(t);
            e.stale_after = Some(t);
            e.source = "/tenants/Ωmega/crm\u{0}\n\"".into();
            e.id = "🔑".repeat(33);
            e.payload_fingerprint = "f".repeat(64);
            out.push(e);
        }
        out
    }

    /// What a status event reads back as: milliseconds (truncated toward
    /// zero), in UTC.
    fn as_read_back(mut e: StatusEvent) -> StatusEvent {
        fn ms(t: time::OffsetDateTime) -> time::OffsetDateTime {
            let nanos = t.unix_timestamp_nanos() / 1_000_000 * 1_000_000;
            time::OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap()
        }
        e.accepted_at = ms(e.accepted_at);
        e.applied_at = e.applied_at.map(ms);
        e.stale_after = e.stale_after.map(ms);
        e
    }

    #[tokio::test]
    async fn direct_status_encoder_matches_apache_avro_byte_for_byte() {
        let c = codec();
        assert!(c.direct_status);
        let schema = c.catalog.status_schema().unwrap();
        for (i, event) in status_variants().into_iter().enumerate() {
            let direct = status_avro::encode(&event).expect("fast path applies");
            let reference = c.encode_status_generic(schema, &event).await.unwrap();
            assert_eq!(direct, reference, "event #{i}: {event:?}");
            let bytes = c.encode_status(&event, PayloadFormat::Avro).await.unwrap();
            assert_eq!(bytes, reference, "event #{i}");
            let back = c.decode_status("application/avro", &bytes).await.unwrap();
            assert_eq!(back, as_read_back(event), "event #{i}");
        }
    }

    #[tokio::test]
    async fn direct_status_encoder_matches_apache_avro_through_the_registry() {
        let sr = writ_testkit::registry::RegistryFixture::start()
            .await
            .unwrap();
        let c = PayloadCodec::new(
            SchemaCatalog::builtin(),
            Some(RegistrySettings::new(&sr.url)),
        )
        .unwrap();
        assert!(c.direct_status);
        let schema = c.catalog.status_schema().unwrap();
        for (i, event) in status_variants().into_iter().enumerate() {
            let bytes = c.encode_status(&event, PayloadFormat::Avro).await.unwrap();
            let reference = c.encode_status_generic(schema, &event).await.unwrap();
            assert_eq!(bytes[0], 0, "magic byte");
            assert_eq!(bytes, reference, "event #{i}");
            let back = c.decode_status("application/avro", &bytes).await.unwrap();
            assert_eq!(back, as_read_back(event), "event #{i}");
        }
    }

    #[tokio::test]
    async fn direct_status_encoder_defers_what_the_generic_path_refuses() {
        let c = codec();
        let schema = c.catalog.status_schema().unwrap();
        let mut too_many = status(true);
        too_many.attempts = i32::MAX as u32 + 1;
        let mut odd_offset = status(true);
        odd_offset.applied_at = Some(datetime!(2026-01-01 0:00:00 +01:00:30));
        for event in [too_many, odd_offset] {
            assert!(status_avro::encode(&event).is_none());
            let got = c.encode_status(&event, PayloadFormat::Avro).await;
            let reference = c.encode_status_generic(schema, &event).await;
            assert_eq!(
                got.unwrap_err().to_string(),
                reference.unwrap_err().to_string()
            );
        }
    }

    #[test]
    fn direct_status_layout_is_checked_against_the_schema() {
        let builtin = SchemaCatalog::builtin();
        let status = builtin.status_schema().unwrap().schema();
        assert!(status_avro::layout_matches(status));
        let json = status.canonical_form();
        // A reordered, renamed or retyped field turns the direct path off.
        for (from, to) in [
            (r#""name":"source""#, r#""name":"origin""#),
            (
                r#""name":"attempts","type":"int""#,
                r#""name":"attempts","type":"long""#,
            ),
            (r#""DEAD_LETTERED""#, r#""DEAD_LETTERED","PARKED""#),
            (
                r#"{"name":"retryable","type":"boolean"}"#,
                r#"{"name":"retryable","type":"string"}"#,
            ),
        ] {
            assert!(json.contains(from), "{from}");
            let changed = Schema::parse_str(&json.replace(from, to)).unwrap();
            assert!(!status_avro::layout_matches(&changed), "{to}");
        }
        let other = builtin.get("customer.delete.v1").unwrap().schema();
        assert!(!status_avro::layout_matches(other));
    }

    /// `cargo test --release -p writ-codec -- --ignored --nocapture`
    #[tokio::test]
    #[ignore = "timing, run by hand in release"]
    async fn status_encode_timing() {
        let c = codec();
        let schema = c.catalog.status_schema().unwrap();
        let events = [status(true), status(false)];
        const N: usize = 20_000;
        let mut bytes = 0usize;
        let start = std::time::Instant::now();
        for i in 0..N {
            let e = std::hint::black_box(&events[i % 2]);
            bytes += c.encode_status_generic(schema, e).await.unwrap().len();
        }
        let generic = start.elapsed().as_nanos() / N as u128;
        let start = std::time::Instant::now();
        for i in 0..N {
            let e = std::hint::black_box(&events[i % 2]);
            bytes += c.encode_status(e, PayloadFormat::Avro).await.unwrap().len();
        }
        let direct = start.elapsed().as_nanos() / N as u128;
        println!(
            "encode_status Avro, ns per event: apache-avro path {generic}, direct {direct} ({bytes} bytes)"
        );
    }

    /// Where `decode` of a JSON command spends its time (see the report on
    /// a direct JSON-to-canonical-JSON walk).
    #[tokio::test]
    #[ignore = "timing, run by hand in release"]
    async fn json_decode_timing() {
        let c = codec();
        const N: u32 = 20_000;
        for (t, payload) in examples() {
            let bytes = serde_json::to_vec(&payload).unwrap();
            let schema = c.schema(t).unwrap().schema();
            let time = |f: &mut dyn FnMut()| {
                let start = std::time::Instant::now();
                for _ in 0..N {
                    f();
                }
                start.elapsed().as_nanos() / u128::from(N)
            };
            let parse = time(&mut || {
                std::hint::black_box(serde_json::from_slice::<serde_json::Value>(&bytes).unwrap());
            });
            let json = serde_json::from_slice(&bytes).unwrap();
            let validate = time(&mut || {
                std::hint::black_box(json_to_avro(schema, &json).unwrap());
            });
            let value = json_to_avro(schema, &json).unwrap();
            let back = time(&mut || {
                std::hint::black_box(avro_to_json(&value));
            });
            let start = std::time::Instant::now();
            for _ in 0..N {
                std::hint::black_box(c.decode(t, "application/json", &bytes).await.unwrap());
            }
            let total = start.elapsed().as_nanos() / u128::from(N);
            println!(
                "decode {t} JSON, ns: total {total} = parse {parse} + json_to_avro {validate} + avro_to_json {back}"
            );
        }
    }

    #[test]
    fn framing_errors_are_specific() {
        assert!(split_framing(&[0, 0, 0])
            .unwrap_err()
            .to_string()
            .contains("shorter"));
        assert!(split_framing(&[1, 0, 0, 0, 1, 2])
            .unwrap_err()
            .to_string()
            .contains("magic byte is 0x01"));
        assert_eq!(
            split_framing(&[0, 0, 0, 1, 2, 9]).unwrap(),
            (258, &[9u8][..])
        );
    }
}
