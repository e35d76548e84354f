"""Shows tansu's (memory engine) live-fetch race without writ.

    tests/run.sh .writ-test/venv/bin/python tests/lib/tansu_fetch_race.py [SECONDS] [PRODUCERS]

Several producers (separate connections, idempotent, acks=all) append to one
partition while a consumer reads it live and notes every offset jump. tansu
reserves a batch's offsets in the partition's watermark before it stores the
batch; a fetch that lands in between and already sees a later producer's
batch returns that one, and the consumer moves past the reserved range for
good. Every acknowledged record is still in the topic afterwards — a reader
starting later gets it — but the live reader never does.

Measured on the 2-core CI machine with four busy-loops as background load,
30 s each: 1 producer 0 gaps (123 695 records); 2 producers 2 gaps, 128
records never delivered (of 234 505); 4 producers 1 gap, 15 records (of
400 430). writ's consumers log such gaps (target `writ_kafka::gap`) and the
chaos harness uses them to tell records the broker skipped from writ's own
losses (crates/writ-chaos/src/gaps.rs).

Exit status 1 when the live reader missed any acknowledged record.
"""
import os
import sys
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap = os.environ["WRIT_TEST_KAFKA"]
seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
producers = int(sys.argv[2]) if len(sys.argv) > 2 else 4
topic = "fetch-race-" + uuid.uuid4().hex[:8]
AdminClient({"bootstrap.servers": bootstrap}).create_topics([NewTopic(topic, 1, 1)])[topic].result()
stop = time.time() + seconds
acked, lock = set(), threading.Lock()


def produce(i):
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                  "acks": "all", "linger.ms": 2})

    def delivered(err, msg):
        if err is None:
            with lock:
                acked.add(msg.value().decode())

    seq = 0
    while time.time() < stop:
        for _ in range(5):
            seq += 1
            p.produce(topic, key=f"p{i}", value=f"{i}-{seq}", on_delivery=delivered)
        p.poll(0.001)
    p.flush(20)


live, gaps = set(), []


def read_live():
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "live-" + topic,
                  "enable.auto.commit": False, "fetch.wait.max.ms": 20})
    c.assign([TopicPartition(topic, 0, 0)])
    last = -1
    while time.time() < stop + 8:
        m = c.poll(0.1)
        if m is None or m.error():
            continue
        if m.offset() != last + 1:
            gaps.append((last + 1, m.offset()))
        last = m.offset()
        live.add(m.value().decode())
    c.close()


reader = threading.Thread(target=read_live)
reader.start()
threads = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
for t in threads:
    t.start()
for t in threads:
    t.join()
reader.join()
missed = acked - live
print(f"{producers} producers, {seconds:.0f} s: {len(acked)} acknowledged, live reader got "
      f"{len(live)}, missed {len(missed)}; offset gaps (from, to): {gaps[:10]}")
sys.exit(1 if missed else 0)
