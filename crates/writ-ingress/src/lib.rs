//! writ's HTTP front door: validates, encodes and produces commands, and
//! answers from a status view materialized from the compacted status topic.
//!
//! - CP-2 `POST /v1/commands/{type}` → `202` + submission id;
//!   CP-1 the same with `Prefer: wait=N` → `201` + canonical id (or the error
//!   inline), degrading to the `202` on timeout;
//!   CP-3 `POST /v1/jobs?type=T` → a streamed NDJSON upload onto the bulk topic.
//! - Idempotency (see [`submit`]): the `Idempotency-Key` and the caller's
//!   tenant form the CloudEvents `(ce_source, ce_id)` identity. Answers to
//!   duplicates come from the status view, which survives restarts (SQLite
//!   file) or is rebuilt from `<domain>.status` at start, and is shared by
//!   every replica through that topic. The guarantee lasts as long as the
//!   status topic retains a submission: its retention is the dedupe window.
//!
//! Embedding: [`Ingress::start`] connects everything, [`Ingress::router`]
//! gives the axum router (to mount more routes on), [`Ingress::submitter`]
//! the internal submit API and [`Ingress::status_view`] the view with its
//! broadcast of status events; [`Ingress::run`] serves until shutdown.

// Handlers and the submit API return `Result<_, Problem>`: the problem is
// built once per failed request and answered at once, so boxing it would only
// add an allocation to every error path.
#![allow(clippy::result_large_err)]

pub mod config;
pub mod drafts;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod seen;
pub mod store;
pub mod submit;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;
use writ_codec::{CodecError, PayloadCodec, RegistrySettings, SchemaCatalog};
use writ_core::TopicLayout;
use writ_http::ApiKeys;
use writ_kafka::{KafkaClientError, RecordProducer};

pub use config::IngressConfig;
pub use drafts::DraftHost;
pub use submit::{SubmissionAnswer, SubmitExtras, Submitter};
pub use view::StatusView;

/// Why the ingress could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// The configuration cannot run.
    #[error("configuration: {0}")]
    Config(String),
    /// Schemas could not be loaded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A Kafka client could not be built.
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
    /// The status store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The status view failed.
    #[error(transparent)]
    View(#[from] view::ViewError),
    /// The listener failed.
    #[error("http listener: {0}")]
    Io(#[from] std::io::Error),
}

/// A started ingress: clients connected, status view reading, socket bound.
pub struct Ingress {
    config: Arc<IngressConfig>,
    submitter: Arc<Submitter>,
    router: Router,
    listener: Option<tokio::net::TcpListener>,
    readers: Vec<JoinHandle<Result<(), view::ViewError>>>,
    background: CancellationToken,
}

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress")
            .field("listen", &self.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Ingress {
    /// Loads schemas, opens the status store, connects Kafka, starts the
    /// status view readers and binds the listener.
    pub async fn start(config: IngressConfig) -> Result<Self, IngressError> {
        config
            .check()
            .map_err(|e| IngressError::Config(e.to_string()))?;
        let catalog = match &config.schemas.dir {
            Some(dir) => SchemaCatalog::load_dir(dir)?,
            None => SchemaCatalog::builtin(),
        };
        let codec = Arc::new(PayloadCodec::new(
            catalog.clone(),
            config
                .schemas
                .registry_url
                .as_deref()
                .map(RegistrySettings::new),
        )?);
        let keys = Arc::new(
            ApiKeys::from_config(&config.auth).map_err(|e| IngressError::Config(e.to_string()))?,
        );
        let producer = RecordProducer::new(&config.producer_settings())?
            .with_queue_timeout(Duration::from_millis(config.limits.produce_timeout_ms));
        let store = store::StatusStore::open(config.store.path.as_deref()).await?;
        let view = Arc::new(StatusView::open(store, metrics::IngressMetrics).await?);
        let submitter = Arc::new(Submitter::new(
            &config,
            codec.clone(),
            producer.clone(),
            view.clone(),
        )?);
        let background = CancellationToken::new();
        let status_topics: Vec<String> = config
            .domains()
            .iter()
            .map(|d| TopicLayout::new(d).map(|l| l.status()))
            .collect::<Result<_, _>>()
            .map_err(|e| IngressError::Config(e.to_string()))?;
        let probe_topic = status_topics[0].clone();
        let mut readers = view
            .spawn_readers(&config.kafka, codec, status_topics, background.clone())
            .await?;
        readers.push(tokio::spawn(view::housekeeping(
            view.clone(),
            Duration::from_millis(config.store.retention_ms),
            background.clone(),
        )));
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let state = http::AppState {
            submitter: submitter.clone(),
            producer,
            limits: config.limits.clone(),
            metrics: metrics::install_recorder(),
            probe_topic,
        };
        let mut router = http::router(state, keys.clone());
        if let Some(drafts) = &config.drafts {
            let service = writ_drafts::DraftService::connect(
                drafts.clone(),
                Arc::new(catalog),
                Arc::new(DraftHost(submitter.clone())),
            )
            .await
            .map_err(|e| IngressError::Config(format!("drafts: {e}")))?;
            service.spawn_purge(background.clone());
            tokio::spawn(settle_drafts(
                service.clone(),
                view.subscribe(),
                background.clone(),
            ));
            router = router.merge(writ_drafts::router(service).layer(
                axum::middleware::from_fn_with_state(keys, writ_http::authenticate),
            ));
        }
        info!(listen = %listener.local_addr()?, types = config.types.len(), "ingress started");
        Ok(Self {
            config: Arc::new(config),
            submitter,
            router,
            listener: Some(listener),
            readers,
            background,
        })
    }

    /// The router, to serve elsewhere or to merge more routes into.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.listener {
            Some(l) => l.local_addr(),
            None => Err(std::io::Error::other("the listener is serving")),
        }
    }

    /// The producer commands and `ACCEPTED` events go through.
    pub fn producer(&self) -> &writ_kafka::RecordProducer {
        self.submitter.producer()
    }

    /// The submission engine behind the HTTP handlers.
    pub fn submitter(&self) -> &Arc<Submitter> {
        &self.submitter
    }

    /// The status view (lookups, waiters, the broadcast of status events).
    pub fn status_view(&self) -> &Arc<StatusView> {
        self.submitter.view()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &IngressConfig {
        &self.config
    }

    /// Waits until the status view has read every status partition to its end once.
    pub async fn caught_up(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.status_view().is_caught_up() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Serves the router until `shutdown`; a failing status reader stops it with its error.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), IngressError> {
        let router = self.router.clone();
        self.run_with(router, shutdown).await
    }

    /// Like [`Ingress::run`], serving `router` (the ingress' router with more routes merged in).
    pub async fn run_with(
        mut self,
        router: Router,
        shutdown: CancellationToken,
    ) -> Result<(), IngressError> {
        let readers = std::mem::take(&mut self.readers);
        let reader_failed = async move {
            use futures::StreamExt;
            let mut readers: futures::stream::FuturesUnordered<_> = readers.into_iter().collect();
            while let Some(result) = readers.next().await {
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return IngressError::View(e),
                    Err(join) => {
                        return IngressError::Config(format!("status reader panicked: {join}"))
                    }
                }
            }
            // Every reader stopped cleanly: only shutdown ends the service now.
            futures::future::pending::<IngressError>().await
        };
        let stop = shutdown.clone();
        let listener = self
            .listener
            .take()
            .expect("run consumes the ingress, so the listener is still there");
        let serve = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
        let result = tokio::select! {
            r = serve => r.map_err(IngressError::Io),
            e = reader_failed => Err(e),
        };
        self.background.cancel();
        info!("ingress stopped");
        result
    }
}

/// Settles drafts as their submissions' status events arrive: applied drafts
/// are deleted, refused ones keep the error. A lagging receiver loses events;
/// those drafts settle on their next read instead (the drafts crate asks the
/// status view then), so nothing is lost, only later.
async fn settle_drafts(
    service: writ_drafts::DraftService,
    mut events: tokio::sync::broadcast::Receiver<writ_core::StatusEvent>,
    stop: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(event) if event.draft_id.is_some() => {
                if let Err(e) = service.apply_status(&event).await {
                    tracing::warn!(error = %e, submission_id = %event.submission_id, "could not settle a draft; it settles on its next read");
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "draft settlement lagged behind the status view; affected drafts settle on their next read");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

impl Drop for Ingress {
    fn drop(&mut self) {
        self.background.cancel();
    }
}

pub use writ_config::init_logging;
