//! Payload codecs for writ: the command and status schemas in `schemas/`,
//! strict JSON validation with a path for every problem, Avro (raw datum, or
//! Confluent framing through a Schema Registry) and canonical JSON.
//!
//! The ingress, the worker and the CLI all encode and decode through
//! [`PayloadCodec`], so a payload one accepts is a payload the others read.

mod catalog;
mod codec;
mod error;
mod json;
mod registry;
mod status_avro;

pub use catalog::{CommandSchema, SchemaCatalog, DATASCHEMA_PREFIX, STATUS_SCHEMA_STEM};
pub use codec::{EncodedPayload, PayloadCodec, PayloadFormat};
pub use error::CodecError;
pub use json::{
    avro_into_json, avro_to_json, json_to_avro, validate_partial, FieldError, ValidationErrors,
};
pub use registry::RegistrySettings;

/// The Avro crate this codec speaks, so callers name the same `Schema` and `Value` types.
pub use apache_avro;
