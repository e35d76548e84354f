//! The embedded broker: librdkafka's mock cluster on a thread of its own.
//!
//! `MockCluster` is not `Send`, so it lives on a dedicated thread for the
//! life of the stack; topics are created there (the mock cluster answers no
//! CreateTopics requests) and dropping [`EmbeddedBroker`] destroys it.

use std::sync::mpsc;

use rdkafka::mocking::MockCluster;

/// A running mock cluster; dropping it shuts the broker down.
pub struct EmbeddedBroker {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A topic to create on the embedded broker.
#[derive(Debug, Clone)]
pub struct MockTopic {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
}

impl EmbeddedBroker {
    /// Starts a cluster of `brokers` brokers and creates `topics` on it.
    pub fn start(brokers: i32, topics: Vec<MockTopic>) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("writ-dev-broker".into())
            .spawn(move || {
                let started = MockCluster::new(brokers)
                    .map_err(|e| anyhow::anyhow!("starting the embedded broker: {e}"))
                    .and_then(|cluster| {
                        for t in &topics {
                            cluster
                                .create_topic(&t.name, t.partitions, 1)
                                .map_err(|e| {
                                    anyhow::anyhow!(
                                        "creating topic {} on the embedded broker: {e}",
                                        t.name
                                    )
                                })?;
                        }
                        Ok(cluster)
                    });
                match started {
                    Ok(cluster) => {
                        let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                        // Block until the stack stops (or is dropped).
                        let _ = stop_rx.recv();
                        drop(cluster);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the embedded broker thread died while starting"))??;
        Ok(Self {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The `bootstrap.servers` of the cluster.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
