//! The Kafka-protocol broker a test runs against: the one `tests/run.sh` started, a testcontainers Kafka, or librdkafka's embedded mock cluster.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::ClientConfig;
use testcontainers::runners::AsyncRunner;
use testcontainers::ContainerAsync;
use testcontainers_modules::kafka::apache;

/// The embedded mock cluster type, as handed to [`TestKafka::with_mock`].
pub type Mock = MockCluster<'static, DefaultProducerContext>;

/// Where a [`TestKafka`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// A broker given by `WRIT_TEST_KAFKA` (tansu under `tests/run.sh`).
    External,
    /// A testcontainers Apache Kafka (Docker).
    Container,
    /// librdkafka's in-process mock cluster (`rdkafka::mocking`).
    Mock,
}

type MockOp = Box<dyn FnOnce(&Mock) + Send>;

enum Backend {
    External { tansu_pid: Option<u32> },
    // Held only to keep the container running; dropping it removes the container.
    Container(#[allow(dead_code)] Box<ContainerAsync<apache::Kafka>>),
    // The MockCluster is !Send, so it lives on its own thread; ops are sent to it.
    // Dropping the sender ends the thread, which destroys the cluster.
    Mock(mpsc::Sender<MockOp>),
}

/// A broker for one test; keep it alive as long as the test uses it.
pub struct TestKafka {
    bootstrap: String,
    backend: Backend,
}

impl std::fmt::Debug for TestKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKafka")
            .field("bootstrap", &self.bootstrap)
            .field("kind", &self.kind())
            .finish()
    }
}

/// A broker per DESIGN.md: `WRIT_TEST_KAFKA` (`mock` forces the mock), else Docker, else a 1-broker mock cluster.
pub async fn kafka() -> TestKafka {
    kafka_with_brokers(1).await
}

/// Like [`kafka`], but a mock cluster (if it comes to that) gets `brokers` brokers.
pub async fn kafka_with_brokers(brokers: i32) -> TestKafka {
    match std::env::var("WRIT_TEST_KAFKA") {
        Ok(v) if v.trim() == "mock" => return mock_kafka(brokers),
        Ok(v) if !v.trim().is_empty() => {
            let tansu_pid = std::env::var("WRIT_TEST_TANSU_PID")
                .ok()
                .and_then(|p| p.trim().parse().ok());
            return TestKafka {
                bootstrap: v.trim().to_owned(),
                backend: Backend::External { tansu_pid },
            };
        }
        _ => {}
    }
    if crate::docker::available() {
        match container().await {
            Ok(k) => return k,
            Err(e) => {
                eprintln!("writ-testkit: Kafka container failed ({e:#}); using the mock cluster")
            }
        }
    }
    mock_kafka(brokers)
}

async fn container() -> anyhow::Result<TestKafka> {
    let c = apache::Kafka::default()
        .start()
        .await
        .context("starting apache/kafka-native")?;
    let port = c.get_host_port_ipv4(apache::KAFKA_PORT).await?;
    Ok(TestKafka {
        bootstrap: format!("127.0.0.1:{port}"),
        backend: Backend::Container(Box::new(c)),
    })
}

/// Always the embedded mock cluster with `brokers` brokers (for fault-injection tests); panics if librdkafka cannot create it.
pub fn mock_kafka(brokers: i32) -> TestKafka {
    let (tx, rx) = mpsc::channel::<MockOp>();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("writ-mock-kafka".into())
        .spawn(move || {
            let cluster = match MockCluster::new(brokers) {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
            while let Ok(op) = rx.recv() {
                op(&cluster);
            }
        })
        .expect("spawn mock cluster thread");
    let bootstrap = ready_rx
        .recv()
        .expect("mock cluster thread died")
        .expect("rdkafka MockCluster::new");
    TestKafka {
        bootstrap,
        backend: Backend::Mock(tx),
    }
}

impl TestKafka {
    /// The `bootstrap.servers` value for clients.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Where this broker comes from.
    pub fn kind(&self) -> BrokerKind {
        match self.backend {
            Backend::External { .. } => BrokerKind::External,
            Backend::Container(_) => BrokerKind::Container,
            Backend::Mock(_) => BrokerKind::Mock,
        }
    }

    /// True for the embedded mock cluster (no real broker; fault injection available).
    pub fn is_mock(&self) -> bool {
        self.kind() == BrokerKind::Mock
    }

    /// A client config with `bootstrap.servers` set.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }

    /// A consumer config for `group`: earliest offsets, no auto commit, and a 6 s session
    /// timeout (tansu holds a JoinGroup for about half the session timeout).
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = self.client_config();
        c.set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500");
        c
    }

    /// Runs `f` on the mock cluster's own thread and returns its result (mock only).
    pub fn with_mock<R, F>(&self, f: F) -> anyhow::Result<R>
    where
        F: FnOnce(&Mock) -> R + Send + 'static,
        R: Send + 'static,
    {
        let Backend::Mock(tx) = &self.backend else {
            bail!(
                "fault injection needs the mock cluster; this broker is {:?}",
                self.kind()
            );
        };
        let (rtx, rrx) = mpsc::channel();
        tx.send(Box::new(move |m: &Mock| {
            let _ = rtx.send(f(m));
        }))
        .map_err(|_| anyhow!("mock cluster thread is gone"))?;
        rrx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| anyhow!("mock cluster did not answer"))
    }

    /// Takes mock broker `id` (1-based) down: its connections close and it refuses new ones.
    pub fn broker_down(&self, id: i32) -> anyhow::Result<()> {
        Ok(self.with_mock(move |m| m.broker_down(id))??)
    }

    /// Brings mock broker `id` back up.
    pub fn broker_up(&self, id: i32) -> anyhow::Result<()> {
        Ok(self.with_mock(move |m| m.broker_up(id))??)
    }

    /// Adds `delay` of round-trip latency to every request to mock broker `id`.
    pub fn broker_round_trip_time(&self, id: i32, delay: Duration) -> anyhow::Result<()> {
        Ok(self.with_mock(move |m| m.broker_round_trip_time(id, delay))??)
    }

    /// Makes the next requests of type `api_key` fail with `errors`, in order (mock only).
    pub fn request_errors(
        &self,
        api_key: rdkafka::types::RDKafkaApiKey,
        errors: &[rdkafka::types::RDKafkaRespErr],
    ) -> anyhow::Result<()> {
        let errors = errors.to_vec();
        self.with_mock(move |m| m.request_errors(api_key, &errors))
    }

    /// Clears errors queued by [`TestKafka::request_errors`] for `api_key`.
    pub fn clear_request_errors(
        &self,
        api_key: rdkafka::types::RDKafkaApiKey,
    ) -> anyhow::Result<()> {
        self.with_mock(move |m| m.clear_request_errors(api_key))
    }

    /// Creates `topic` with `partitions` partitions on the mock (the mock has no CreateTopics admin API).
    pub fn create_mock_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let topic = topic.to_owned();
        Ok(self.with_mock(move |m| m.create_topic(&topic, partitions, 1))??)
    }

    fn tansu_pid(&self) -> anyhow::Result<u32> {
        match self.backend {
            Backend::External { tansu_pid: Some(p) } => Ok(p),
            Backend::External { tansu_pid: None } => {
                bail!("WRIT_TEST_TANSU_PID is not set: cannot suspend the external broker")
            }
            _ => bail!(
                "suspend/resume needs the external broker of tests/run.sh; this one is {:?}",
                self.kind()
            ),
        }
    }

    /// Freezes the external broker (SIGSTOP to `WRIT_TEST_TANSU_PID`): a Kafka outage without losing its data.
    pub fn suspend(&self) -> anyhow::Result<()> {
        signal(self.tansu_pid()?, "STOP")
    }

    /// Thaws the external broker after [`TestKafka::suspend`] (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        signal(self.tansu_pid()?, "CONT")
    }
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let st = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !st.success() {
        bail!("kill -{sig} {pid} failed: {st}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unique_topic;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    use rdkafka::{Message, Offset, TopicPartitionList};

    async fn round_trip(k: &TestKafka) -> anyhow::Result<()> {
        let topic = unique_topic("testkit");
        let producer: FutureProducer = k
            .client_config()
            .set("message.timeout.ms", "20000")
            .create()?;
        let rdkafka::producer::future_producer::Delivery {
            partition, offset, ..
        } = producer
            .send(
                FutureRecord::to(&topic)
                    .key("k1")
                    .payload("v1")
                    .partition(0),
                Duration::from_secs(20),
            )
            .await
            .map_err(|(e, _)| e)?;
        let consumer: StreamConsumer = k
            .consumer_config(&crate::unique_group("testkit"))
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
        consumer.assign(&tpl)?;
        let msg = tokio::time::timeout(Duration::from_secs(20), consumer.recv()).await??;
        assert_eq!(msg.key(), Some(&b"k1"[..]));
        assert_eq!(msg.payload(), Some(&b"v1"[..]));
        Ok(())
    }

    #[tokio::test]
    async fn kafka_carries_a_record() {
        let k = kafka().await;
        eprintln!("broker: {k:?}");
        round_trip(&k).await.unwrap();
    }

    #[tokio::test]
    async fn mock_cluster_injects_faults() {
        let k = mock_kafka(3);
        assert!(k.is_mock());
        assert_eq!(k.bootstrap_servers().split(',').count(), 3);
        k.broker_round_trip_time(2, Duration::from_millis(5))
            .unwrap();
        k.broker_down(3).unwrap();
        k.broker_up(3).unwrap();
        k.request_errors(
            rdkafka::types::RDKafkaApiKey::Produce,
            &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS],
        )
        .unwrap();
        k.clear_request_errors(rdkafka::types::RDKafkaApiKey::Produce)
            .unwrap();
        k.create_mock_topic("made-by-hand", 3).unwrap();
        assert!(k.suspend().is_err(), "suspend is for the external broker");
        round_trip(&k).await.unwrap();
    }

    #[tokio::test]
    async fn mock_broker_down_is_an_outage() {
        let k = mock_kafka(1);
        k.broker_down(1).unwrap();
        let producer: FutureProducer = k
            .client_config()
            .set("message.timeout.ms", "1500")
            .create()
            .unwrap();
        let r = producer
            .send(
                FutureRecord::to("down").key("k").payload("v"),
                Duration::from_secs(5),
            )
            .await;
        assert!(r.is_err(), "produce to a downed mock broker must fail");
        producer.flush(Duration::from_secs(1)).ok();
    }

    #[tokio::test]
    async fn external_broker_can_be_suspended() {
        let k = kafka().await;
        if k.kind() != BrokerKind::External || k.tansu_pid().is_err() {
            eprintln!("skipping: needs WRIT_TEST_KAFKA and WRIT_TEST_TANSU_PID (tests/run.sh)");
            return;
        }
        k.suspend().unwrap();
        struct Resume<'a>(&'a TestKafka);
        impl Drop for Resume<'_> {
            fn drop(&mut self) {
                let _ = self.0.resume();
            }
        }
        let guard = Resume(&k);
        let producer: FutureProducer = k
            .client_config()
            .set("message.timeout.ms", "1500")
            .create()
            .unwrap();
        let r = producer
            .send(
                FutureRecord::<(), _>::to(&unique_topic("frozen")).payload("v"),
                Duration::from_secs(5),
            )
            .await;
        assert!(r.is_err(), "produce to a suspended broker must fail");
        drop(guard);
        round_trip(&k).await.unwrap();
    }
}
