//! The command envelope: everything writ needs to know about a command besides
//! its payload, as carried in CloudEvents binary-mode Kafka headers.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::identity::submission_id;

/// How the payload (the Kafka record value) is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// `application/json`: UTF-8 JSON, validated against the type's schema.
    Json,
    /// `application/avro`: an Avro datum (Confluent framing when a registry is used).
    Avro,
}

impl ContentType {
    /// The media type written in the `content-type` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Avro => "application/avro",
        }
    }

    /// Parses a media type, ignoring parameters (`; charset=utf-8`) and case.
    pub fn parse(media_type: &str) -> Option<Self> {
        let essence = media_type.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/json") {
            Some(Self::Json)
        } else if essence.eq_ignore_ascii_case("application/avro")
            || essence.eq_ignore_ascii_case("avro/binary")
        {
            Some(Self::Avro)
        } else {
            None
        }
    }
}

/// A command's metadata: the CloudEvents attributes and writ's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandEnvelope {
    /// `ce_id`: the producer's idempotency key.
    pub id: String,
    /// `ce_source`: the producer, a tenant-scoped URI such as `/tenants/acme/crm`.
    pub source: String,
    /// `ce_type`: the command type with its version, e.g. `customer.upsert.v1`.
    pub command_type: String,
    /// `ce_subject`: the entity key; commands of one entity share a partition.
    pub subject: Option<String>,
    /// `ce_time`: when the producer created the command.
    pub time: Option<OffsetDateTime>,
    /// `content-type` of the payload.
    pub content_type: ContentType,
    /// `ce_dataschema`: the schema the payload was written with.
    pub data_schema: Option<String>,
    /// `ce_expectedversion`: optimistic concurrency against the master's version.
    pub expected_version: Option<i64>,
    /// `ce_staleafter`: the instant past which a pending command is stale.
    pub stale_after: Option<OffsetDateTime>,
    /// `ce_jobid`: the bulk job the command belongs to.
    pub job_id: Option<String>,
    /// `ce_jobline`: the line of the bulk upload the command came from.
    pub job_line: Option<i64>,
    /// `ce_draftid`: the draft the command was submitted from.
    pub draft_id: Option<String>,
    /// `ce_tempid`: the temporary id an edge service handed out for the entity.
    pub temp_id: Option<String>,
    /// W3C `traceparent`, continued by the worker's spans.
    pub traceparent: Option<String>,
}

impl CommandEnvelope {
    /// A new envelope with the required attributes and no options set.
    pub fn new(
        id: impl Into<String>,
        source: impl Into<String>,
        command_type: impl Into<String>,
        content_type: ContentType,
    ) -> Self {
        Self {
            id: id.into(),
            source: source.into(),
            command_type: command_type.into(),
            subject: None,
            time: None,
            content_type,
            data_schema: None,
            expected_version: None,
            stale_after: None,
            job_id: None,
            job_line: None,
            draft_id: None,
            temp_id: None,
            traceparent: None,
        }
    }

    /// The submission id: UUIDv5 of (source, id).
    pub fn submission_id(&self) -> Uuid {
        submission_id(&self.source, &self.id)
    }

    /// The Kafka record key: the subject, or the id for a create without one.
    pub fn partition_key(&self) -> &str {
        self.subject.as_deref().unwrap_or(&self.id)
    }

    /// Sets the subject (builder style).
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_parsing_ignores_parameters_and_case() {
        assert_eq!(
            ContentType::parse("application/json"),
            Some(ContentType::Json)
        );
        assert_eq!(
            ContentType::parse("Application/JSON; charset=utf-8"),
            Some(ContentType::Json)
        );
        assert_eq!(
            ContentType::parse("application/avro"),
            Some(ContentType::Avro)
        );
        assert_eq!(ContentType::parse("text/plain"), None);
        assert_eq!(ContentType::parse(""), None);
    }

    #[test]
    fn partition_key_falls_back_to_id() {
        let e = CommandEnvelope::new(
            "k1",
            "/tenants/a/crm",
            "customer.upsert.v1",
            ContentType::Json,
        );
        assert_eq!(e.partition_key(), "k1");
        let e = e.with_subject("cust-7");
        assert_eq!(e.partition_key(), "cust-7");
    }
}
