//! Schema arguments shared by every command that encodes or decodes
//! payloads, named like the worker's configuration keys so one environment
//! serves both.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use writ_codec::{PayloadCodec, RegistrySettings, SchemaCatalog};

/// Where schemas come from.
#[derive(Debug, Clone, Args)]
pub struct CodecArgs {
    /// Confluent Schema Registry URL (Avro payloads then use registry framing).
    #[arg(long, env = "WRIT__REGISTRY_URL")]
    pub registry_url: Option<String>,
    /// A directory of `.avsc` files to use instead of the built-in `schemas/`.
    #[arg(long, env = "WRIT__SCHEMAS_DIR")]
    pub schemas_dir: Option<PathBuf>,
}

impl CodecArgs {
    /// The codec these arguments describe.
    pub fn codec(&self) -> Result<PayloadCodec> {
        let catalog = match &self.schemas_dir {
            Some(dir) => SchemaCatalog::load_dir(dir)
                .with_context(|| format!("loading schemas from {}", dir.display()))?,
            None => SchemaCatalog::builtin(),
        };
        let registry = self.registry_url.as_ref().map(RegistrySettings::new);
        PayloadCodec::new(catalog, registry).context("setting up the payload codec")
    }
}
