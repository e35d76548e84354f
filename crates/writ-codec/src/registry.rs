//! The Schema Registry side of the codec: schema ids for encoding and writer
//! schemas for decoding, cached, with registry failures classified so the
//! worker retries an outage and dead-letters an unknown id.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use apache_avro::Schema;
use schema_registry_converter::async_impl::schema_registry::{
    get_schema_by_id, perform_sr_call, post_schema, SrSettings,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    RawError, SchemaType, SrCall, SuppliedSchema,
};

use crate::catalog::CommandSchema;
use crate::error::CodecError;

/// Where the Schema Registry is and how writ uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    /// Base URL, e.g. `http://schema-registry:8081`.
    pub url: String,
    /// Per-request timeout; a timeout counts as "registry unavailable".
    pub timeout: Duration,
    /// Register schemas on first use (`POST /subjects/{s}/versions`); when
    /// false, only look them up (`POST /subjects/{s}`), for registries where
    /// producers may not register.
    pub auto_register: bool,
    /// HTTP basic auth (user, password).
    pub basic_auth: Option<(String, Option<String>)>,
}

impl RegistrySettings {
    /// Settings for `url` with a 10 s timeout and auto-registration.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: Duration::from_secs(10),
            auto_register: true,
            basic_auth: None,
        }
    }
}

/// A registry client with id and schema caches.
#[derive(Debug)]
pub(crate) struct Registry {
    sr: SrSettings,
    base_url: String,
    auto_register: bool,
    /// Registry subject -> schema id, for encoding.
    ids: RwLock<HashMap<String, u32>>,
    /// Schema id -> writer schema, for decoding.
    writers: RwLock<HashMap<u32, Arc<Schema>>>,
}

impl Registry {
    pub(crate) fn new(settings: &RegistrySettings) -> Result<Self, CodecError> {
        let base_url = settings.url.trim_end_matches('/').to_string();
        let mut builder = SrSettings::new_builder(base_url.clone());
        builder.set_timeout(settings.timeout);
        if let Some((user, password)) = &settings.basic_auth {
            builder.set_basic_authorization(user, password.as_deref());
        }
        let sr = builder
            .build()
            .map_err(|e| CodecError::Schema(format!("schema registry settings: {e}")))?;
        Ok(Self {
            sr,
            base_url,
            auto_register: settings.auto_register,
            ids: RwLock::default(),
            writers: RwLock::default(),
        })
    }

    /// `ce_dataschema` for a registry id: where the writer schema can be fetched.
    pub(crate) fn dataschema(&self, id: u32) -> String {
        format!("{}/schemas/ids/{id}", self.base_url)
    }

    /// The registry id of a local schema, registering it under its record
    /// full name (RecordNameStrategy, see `schemas/README.md`).
    pub(crate) async fn id_for(&self, schema: &CommandSchema) -> Result<u32, CodecError> {
        let subject = schema.full_name();
        if let Some(id) = read(&self.ids).get(subject) {
            return Ok(*id);
        }
        let id = if self.auto_register {
            let supplied = SuppliedSchema::new(
                Some(subject.to_string()),
                SchemaType::Avro,
                schema.raw().to_string(),
            );
            post_schema(&self.sr, subject.to_string(), supplied)
                .await
                .map_err(|e| classify(e, None))?
                .id
        } else {
            let body =
                serde_json::json!({"schema": schema.raw(), "schemaType": "AVRO"}).to_string();
            let found = perform_sr_call(&self.sr, SrCall::PostForVersion(subject, &body))
                .await
                .map_err(|e| classify(e, None))?;
            found.id.ok_or_else(|| {
                CodecError::RegistryUnavailable(format!("lookup of {subject} returned no id"))
            })?
        };
        write(&self.ids).insert(subject.to_string(), id);
        // We know this id's schema: decoding our own records needs no fetch.
        write(&self.writers).insert(id, Arc::new(schema.schema().clone()));
        Ok(id)
    }

    /// The writer schema registered under `id`.
    pub(crate) async fn writer_schema(&self, id: u32) -> Result<Arc<Schema>, CodecError> {
        if let Some(s) = read(&self.writers).get(&id) {
            return Ok(s.clone());
        }
        let registered = get_schema_by_id(id, &self.sr)
            .await
            .map_err(|e| classify(e, Some(id)))?;
        if registered.schema_type != SchemaType::Avro {
            return Err(CodecError::RegistryRejected(format!(
                "schema id {id} is not an Avro schema"
            )));
        }
        let parsed = Schema::parse_str(&registered.schema).map_err(|e| {
            CodecError::RegistryRejected(format!("schema id {id} does not parse: {e}"))
        })?;
        let parsed = Arc::new(parsed);
        write(&self.writers).insert(id, parsed.clone());
        Ok(parsed)
    }
}

/// Maps a registry client error: only a definite answer from the registry is
/// permanent; no answer, a 5xx or an unreadable answer is an outage.
fn classify(e: SRCError, looked_up_id: Option<u32>) -> CodecError {
    let raw = e.source().and_then(|s| s.downcast_ref::<RawError>());
    match (raw.map(|r| r.error_code), looked_up_id) {
        // 40403: schema not found.
        (Some(40403), Some(id)) => CodecError::UnknownSchemaId(id),
        // 4xxxx and 409 (incompatible) are the registry's considered refusal.
        (Some(code), _) if (40000..50000).contains(&code) || code == 409 || code == 422 => {
            CodecError::RegistryRejected(e.to_string())
        }
        _ => CodecError::RegistryUnavailable(e.to_string()),
    }
}

/// Poisoning only happens if a holder panicked; the maps stay consistent
/// (every write is a single insert), so keep using them.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}
