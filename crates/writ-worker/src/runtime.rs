//! The worker's run loop: gather a batch, process it, store and commit its
//! offsets, repeat — with supervised side tasks (HTTP, inbox expiry, lag) and
//! a drain on shutdown that finishes the in-flight batch within a bound.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::CommitMode;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use writ_codec::{PayloadCodec, RegistrySettings, SchemaCatalog};
use writ_core::TopicLayout;
use writ_kafka::{BatchConsumer, RecordProducer};

use crate::config::{Profile, WorkerConfig};
use crate::decode::Decoded;
use crate::metrics::{install_recorder, WorkerMetrics};
use crate::pipeline::{Pipeline, Prepared};
use crate::rate::AdaptiveRateLimiter;
use crate::server;

/// How often expired inbox entries are deleted.
const INBOX_EXPIRY_INTERVAL: Duration = Duration::from_secs(600);
/// How often consumer lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(15);

/// A worker that has connected everything and is ready to run.
pub struct Worker {
    config: WorkerConfig,
    pipeline: Arc<Pipeline>,
    consumer: Arc<BatchConsumer>,
    listener: tokio::net::TcpListener,
    metrics: WorkerMetrics,
}

impl Worker {
    /// Connects the master, Kafka clients and the HTTP listener.
    pub async fn connect(config: WorkerConfig) -> anyhow::Result<Self> {
        let master = writ_store::connect(&config.master)
            .await
            .context("connecting the master")?;
        Self::with_master(config, master).await
    }

    /// Like [`Worker::connect`], but applies to a [`writ_store::Master`] of the
    /// caller's own (the `[master]` section of `config` is then not used).
    pub async fn with_master(
        config: WorkerConfig,
        master: Arc<dyn writ_store::Master>,
    ) -> anyhow::Result<Self> {
        let layout = TopicLayout::new(&config.domain)?;
        let catalog = match &config.schemas_dir {
            Some(dir) => SchemaCatalog::load_dir(dir)
                .with_context(|| format!("loading schemas from {}", dir.display()))?,
            None => SchemaCatalog::builtin(),
        };
        let codec = PayloadCodec::new(
            catalog,
            config.registry_url.as_deref().map(RegistrySettings::new),
        )?;
        let producer = RecordProducer::new(&config.kafka)?;
        let topic = match config.profile {
            Profile::Interactive => layout.commands(),
            Profile::Bulk => layout.bulk(),
        };
        let mut consumer_settings = config.kafka.clone();
        if config.profile == Profile::Interactive {
            // A broker answers a fetch early once data arrives, but not every
            // Kafka-protocol broker does; the interactive profile must not then
            // add librdkafka's 500 ms default wait to every CP-1 answer. Idle,
            // it costs a few empty fetches per second.
            consumer_settings = consumer_settings.or_with("fetch.wait.max.ms", "50");
        }
        let consumer = if config.partition_queues {
            BatchConsumer::with_partition_queues(
                &consumer_settings,
                &config.group_id(),
                &[&topic],
                Duration::from_secs(10),
            )
            .await?
        } else {
            BatchConsumer::new(&consumer_settings, &config.group_id(), &[&topic])?
        };
        let consumer = Arc::new(consumer);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let metrics = WorkerMetrics::new(&config.domain, config.profile.as_str());
        let pipeline = Arc::new(Pipeline {
            codec: Arc::new(codec),
            master,
            producer,
            layout,
            limiter: Arc::new(AdaptiveRateLimiter::new(&config.rate)),
            retry: config.retry.clone(),
            metrics: metrics.clone(),
            worker_id: config.worker_id.clone(),
            status_format: config.status_format,
            dead_letter_rejections: config.dead_letter_rejections,
            apply_lanes: config.apply_lanes(),
        });
        info!(
            worker_id = %config.worker_id,
            domain = %config.domain,
            profile = config.profile.as_str(),
            group = %config.group_id(),
            %topic,
            master = pipeline.master.kind(),
            "worker connected"
        );
        Ok(Self {
            config,
            pipeline,
            consumer,
            listener,
            metrics,
        })
    }

    /// The address `/metrics`, `/healthz` and `/readyz` are served on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs until `shutdown`, then drains: the in-flight batch is finished
    /// (within `drain_timeout_ms`) and its offsets committed synchronously.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            config,
            pipeline,
            consumer,
            listener,
            metrics,
        } = self;
        let ready = Arc::new(AtomicBool::new(false));
        // Side tasks stop with the worker; a failing one stops the worker.
        let tasks = shutdown.child_token();
        let mut side = tokio::task::JoinSet::new();
        side.spawn(server::serve(
            listener,
            install_recorder(),
            ready.clone(),
            tasks.clone(),
        ));
        {
            let master = pipeline.master.clone();
            let window = Duration::from_millis(config.dedupe_window_ms);
            let stop = tasks.clone();
            side.spawn(async move {
                let mut tick = tokio::time::interval(INBOX_EXPIRY_INTERVAL);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tick.tick() => {}
                    }
                    match master
                        .expire_inbox(OffsetDateTime::now_utc() - window)
                        .await
                    {
                        Ok(n) if n > 0 => info!(deleted = n, "expired inbox entries"),
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "inbox expiry failed; will retry"),
                    }
                }
            });
        }
        {
            let consumer = consumer.clone();
            let metrics = metrics.clone();
            let stop = tasks.clone();
            side.spawn(async move {
                let mut tick = tokio::time::interval(LAG_INTERVAL);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tick.tick() => {}
                    }
                    let c = consumer.clone();
                    // Offset and watermark queries block on the network.
                    match tokio::task::spawn_blocking(move || c.lag(Duration::from_secs(5))).await {
                        Ok(Ok(lags)) => {
                            for (topic, partition, lag) in lags {
                                metrics.consumer_lag(&topic, partition, lag);
                            }
                        }
                        Ok(Err(e)) => warn!(error = %e, "measuring consumer lag failed"),
                        Err(e) => warn!(error = %e, "lag task panicked"),
                    }
                }
            });
        }

        ready.store(true, Ordering::Relaxed);
        let limits = config.batch_limits();
        let drain = config.drain_timeout();
        // Delivery runs one batch behind: while batch N's status events are
        // built, produced and acknowledged (and only then its offsets stored),
        // batch N+1 is gathered, decoded and applied. Offsets still follow acks.
        // A batch that must be committed before the next one applies carries
        // a sender the delivery task answers once the commit is durable.
        let (deliver_tx, mut deliver_rx) =
            tokio::sync::mpsc::channel::<(Prepared, Option<oneshot::Sender<()>>)>(1);
        let mut delivery = {
            let pipeline = pipeline.clone();
            let consumer = consumer.clone();
            let metrics = metrics.clone();
            let commit_every = config.commit_interval();
            tokio::spawn(async move {
                // Stored offsets not committed yet, and since when.
                let mut uncommitted: Option<tokio::time::Instant> = None;
                let commit_async = |uncommitted: &mut Option<tokio::time::Instant>| {
                    *uncommitted = None;
                    if let Err(e) = consumer.commit(CommitMode::Async) {
                        metrics.commit_failed();
                        warn!(error = %e, "async offset commit failed; the next commit covers it");
                    }
                };
                loop {
                    let due = uncommitted.map(|since| since + commit_every);
                    let next = tokio::select! {
                        next = deliver_rx.recv() => next,
                        _ = async { tokio::time::sleep_until(due.expect("guarded")).await }, if due.is_some() => {
                            commit_async(&mut uncommitted);
                            continue;
                        }
                    };
                    let Some((prepared, committed)) = next else {
                        break;
                    };
                    let offsets = prepared.offsets();
                    let report = pipeline.deliver(prepared).await?;
                    let t = std::time::Instant::now();
                    consumer.store_offsets(offsets.iter().map(|(t, p, o)| (t.as_str(), *p, *o)))?;
                    if let Some(committed) = committed {
                        commit_through_rebalance(&consumer, drain).await.context(
                            "committing offsets past dead-lettered commands failed; stopping \
                                 so that whoever consumes next replays them in order",
                        )?;
                        uncommitted = None;
                        let _ = committed.send(());
                    } else {
                        let since = *uncommitted.get_or_insert_with(tokio::time::Instant::now);
                        if since.elapsed() >= commit_every {
                            commit_async(&mut uncommitted);
                        }
                    }
                    metrics.stage("commit", t.elapsed());
                    tracing::debug!(?report, "batch delivered, offsets stored");
                }
                Ok::<(), anyhow::Error>(())
            })
        };
        // Gathering and decoding run one batch ahead of the apply, on their own task.
        let (decoded_tx, mut decoded_rx) =
            tokio::sync::mpsc::channel::<(Vec<writ_kafka::ConsumedRecord>, Vec<Decoded>)>(1);
        let gather_stop = shutdown.child_token();
        let mut gather = {
            let pipeline = pipeline.clone();
            let consumer = consumer.clone();
            let stop = gather_stop.clone();
            tokio::spawn(async move {
                loop {
                    // Take the hand-off slot before gathering, so at most one
                    // decoded batch waits while another is applied: memory is
                    // bounded by two batches, not three.
                    let permit = tokio::select! {
                        biased;
                        _ = stop.cancelled() => break,
                        permit = decoded_tx.reserve() => match permit {
                            Ok(permit) => permit,
                            Err(_) => break,
                        },
                    };
                    let batch = tokio::select! {
                        biased;
                        _ = stop.cancelled() => break,
                        batch = consumer.next_batch(limits) => batch?,
                    };
                    let decoded = tokio::select! {
                        biased;
                        _ = stop.cancelled() => break,
                        decoded = pipeline.decode_batch(&batch) => decoded?,
                    };
                    permit.send((batch, decoded));
                }
                Ok::<(), anyhow::Error>(())
            })
        };
        // Set when the delivery task ended while the loop ran (it only ends early on an error).
        let mut delivery_ended = None;
        let result: anyhow::Result<()> = async {
            loop {
                let (batch, decoded) = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    // A failed delivery stops the worker now, not when the next batch arrives.
                    ended = &mut delivery => {
                        delivery_ended = Some(ended);
                        break;
                    }
                    side_done = side.join_next() => {
                        match side_done {
                            Some(Ok(Ok(()))) | None => anyhow::bail!("a worker side task stopped unexpectedly"),
                            Some(Ok(Err(e))) => return Err(anyhow::Error::new(e).context("metrics/health server failed")),
                            Some(Err(e)) => anyhow::bail!("a worker side task panicked: {e}"),
                        }
                    }
                    item = decoded_rx.recv() => match item {
                        Some(item) => item,
                        // The gather task stopped; its error is collected below.
                        None => break,
                    },
                };
                // Finish the batch even when shutdown arrives meanwhile, but
                // only for `drain`: an abandoned batch is simply replayed later.
                let records = batch.len();
                let prepared = tokio::select! {
                    prepared = pipeline.apply(batch, decoded) => prepared?,
                    _ = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => {
                        warn!(records, "drain timeout: abandoning the in-flight batch; it will be replayed");
                        break;
                    }
                };
                let (committed_tx, committed_rx) = if prepared.needs_commit_before_next() {
                    let (tx, rx) = oneshot::channel();
                    (Some(tx), Some(rx))
                } else {
                    (None, None)
                };
                if deliver_tx.send((prepared, committed_tx)).await.is_err() {
                    // The delivery task stopped; its error is collected below.
                    break;
                }
                if let Some(committed) = committed_rx {
                    info!("commands were dead-lettered after exhausting retries; committing before applying more");
                    tokio::select! {
                        // An Err means the delivery task stopped; its error is collected below.
                        done = committed => if done.is_err() { break },
                        _ = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => break,
                    }
                }
            }
            Ok(())
        }
        .await;
        drop(decoded_rx);
        gather_stop.cancel();
        let gathered = match tokio::time::timeout(drain, &mut gather).await {
            Ok(Ok(r)) => r.context("consuming and decoding"),
            Ok(Err(e)) => Err(anyhow::anyhow!("gather task panicked: {e}")),
            Err(_) => {
                gather.abort();
                Ok(())
            }
        };
        let result = result.and(gathered);
        drop(deliver_tx);
        let ended = match delivery_ended {
            Some(ended) => Ok(ended),
            None => tokio::time::timeout(drain, &mut delivery).await,
        };
        let delivered = match ended {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(anyhow::anyhow!("delivery task panicked: {e}")),
            Err(_) => {
                delivery.abort();
                warn!("drain timeout while delivering; undelivered batches will be replayed");
                Ok(())
            }
        };
        let result = result.and(delivered.context("delivering status events and dead letters"));

        ready.store(false, Ordering::Relaxed);
        tasks.cancel();
        let commit = {
            let c = consumer.clone();
            tokio::task::spawn_blocking(move || c.commit(CommitMode::Sync)).await
        };
        match commit {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(error = %e, "final offset commit failed; uncommitted batches will be replayed (no-ops)")
            }
            Err(e) => warn!(error = %e, "final commit task panicked"),
        }
        let _ = pipeline.producer.flush(Duration::from_secs(5));
        while side.join_next().await.is_some() {}
        info!("worker stopped");
        result
    }
}

/// A synchronous commit that rides out a rebalance: while the group moves to
/// a new generation the broker refuses commits of the old one, so the commit
/// is retried with backoff for up to `budget`. Any other error, or one that
/// outlasts the budget, is returned.
async fn commit_through_rebalance(
    consumer: &Arc<BatchConsumer>,
    budget: Duration,
) -> anyhow::Result<()> {
    use rdkafka::types::RDKafkaErrorCode::{
        IllegalGeneration, RebalanceInProgress, UnknownMemberId,
    };
    let deadline = tokio::time::Instant::now() + budget;
    let mut delay = Duration::from_millis(100);
    loop {
        let c = consumer.clone();
        let result = tokio::task::spawn_blocking(move || c.commit(CommitMode::Sync))
            .await
            .context("commit task panicked")?;
        match result {
            Ok(()) => return Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    Some(IllegalGeneration | RebalanceInProgress | UnknownMemberId)
                ) && tokio::time::Instant::now() + delay < deadline =>
            {
                warn!(error = %e, ?delay, "offset commit refused during a rebalance; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
