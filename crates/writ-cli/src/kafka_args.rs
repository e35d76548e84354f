//! Kafka connection arguments shared by every subcommand that talks to a
//! broker, including librdkafka pass-through (`-X key=value`, as kcat does).

use anyhow::{bail, Result};
use clap::Args;
use writ_kafka::KafkaSettings;

/// How to reach the cluster.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        short = 'b',
        env = "WRIT__KAFKA__BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_servers: String,
    /// Any librdkafka property, e.g. `-X security.protocol=SASL_SSL`; repeatable.
    #[arg(short = 'X', long = "kafka-property", value_name = "KEY=VALUE", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
}

impl KafkaArgs {
    /// The client settings these arguments describe, checked for every client role.
    pub fn settings(&self) -> Result<KafkaSettings> {
        let mut s = KafkaSettings::new(&self.bootstrap_servers);
        s.client_id = "writ-cli".to_owned();
        for (k, v) in &self.properties {
            s.properties.insert(k.clone(), v.clone());
        }
        s.validate()?;
        Ok(s)
    }
}

fn parse_property(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => bail!("expected KEY=VALUE, got `{s}`"),
    }
}

/// Parses `500ms`, `30s`, `15m`, `12h`, `7d` (or plain milliseconds) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: i64 = match digits.parse() {
        Ok(n) => n,
        Err(_) => bail!("`{s}` is not a duration; use e.g. 500ms, 30s, 15m, 12h, 7d"),
    };
    let factor = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => bail!("unknown duration unit `{other}` in `{s}`; use ms, s, m, h or d"),
    };
    n.checked_mul(factor)
        .ok_or_else(|| anyhow::anyhow!("duration `{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_properties_parse_with_clear_errors() {
        assert_eq!(parse_duration_ms("7d").unwrap(), 7 * 86_400_000);
        assert_eq!(parse_duration_ms("250").unwrap(), 250);
        assert_eq!(parse_duration_ms("30s").unwrap(), 30_000);
        assert!(parse_duration_ms("7 weeks")
            .unwrap_err()
            .to_string()
            .contains("unit"));
        assert!(parse_duration_ms("abc").is_err());
        assert_eq!(
            parse_property("sasl.mechanism=PLAIN").unwrap(),
            ("sasl.mechanism".into(), "PLAIN".into())
        );
        assert_eq!(parse_property("k=a=b").unwrap().1, "a=b");
        assert!(parse_property("novalue").is_err());
    }
}
