//! Turns a consumed record into a command the master can apply, or into a
//! dead letter with a reason. A record that cannot become a command never
//! stops the worker: it is dead-lettered and the batch goes on.

use writ_codec::{CodecError, PayloadCodec};
use writ_core::dlq::DlqReason;
use writ_core::{cloudevents, payload_fingerprint, Classified, CommandEnvelope};
use writ_kafka::ConsumedRecord;
use writ_store::{Command, Master};

/// A record that will not reach the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Why.
    pub reason: DlqReason,
    /// Stable error code for headers, status and metrics.
    pub code: String,
    /// Human-readable detail (field paths for validation errors; no payload values).
    pub message: String,
    /// The envelope, when the headers were valid (then a status event is emitted too).
    pub envelope: Option<CommandEnvelope>,
}

/// What a record became.
#[derive(Debug, Clone)]
pub enum Decoded {
    /// A valid command for the master.
    Command(Command),
    /// A dead letter.
    DeadLetter(DeadLetter),
}

/// Decodes one record. `Err` only for retryable trouble (the schema registry
/// is down): the caller retries the batch instead of dead-lettering good data.
pub async fn decode_record(
    record: &ConsumedRecord,
    codec: &PayloadCodec,
    master: &dyn Master,
) -> Result<Decoded, CodecError> {
    let envelope = match cloudevents::from_headers(&record.headers) {
        Ok(e) => e,
        Err(e) => {
            return Ok(Decoded::DeadLetter(DeadLetter {
                reason: DlqReason::Poison,
                code: e.code().to_owned(),
                message: e.to_string(),
                // With a readable id and source the submitter still gets a status.
                envelope: cloudevents::identity_from_headers(&record.headers),
            }));
        }
    };
    let dead = |reason, code: &str, message: String, envelope: CommandEnvelope| {
        Ok(Decoded::DeadLetter(DeadLetter {
            reason,
            code: code.to_owned(),
            message,
            envelope: Some(envelope),
        }))
    };
    if codec.catalog().get(&envelope.command_type).is_none()
        || !master.handles(&envelope.command_type)
    {
        let message = format!(
            "no schema or master mapping for command type `{}`",
            envelope.command_type
        );
        return dead(DlqReason::UnknownType, "UNKNOWN_TYPE", message, envelope);
    }
    let Some(value) = record.value.as_deref().filter(|v| !v.is_empty()) else {
        return dead(
            DlqReason::Poison,
            "EMPTY_PAYLOAD",
            "the record has no value".to_owned(),
            envelope,
        );
    };
    match codec
        .decode(
            &envelope.command_type,
            envelope.content_type.as_str(),
            value,
        )
        .await
    {
        Ok(payload) => Ok(Decoded::Command(Command {
            submission_id: envelope.submission_id(),
            fingerprint: payload_fingerprint(&payload),
            envelope,
            payload,
        })),
        Err(e) if e.is_retryable() => Err(e),
        Err(e) => {
            let code = e.code();
            dead(DlqReason::Poison, code, e.to_string(), envelope)
        }
    }
}
