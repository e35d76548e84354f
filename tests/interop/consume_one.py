#!/usr/bin/env python3
"""Read the first record of a topic with an independent client (confluent_kafka, not writ).

Used by writ's interop tests to check what writ produced, byte for byte. Prints
{"key", "headers": {name: utf8 value}, "value_b64", "partition", "offset"} as JSON
and exits 0; exits 2 if no record arrives within --timeout seconds.

It assigns every partition at the beginning instead of joining the (unique) group:
the group protocol adds nothing here, and some brokers (tansu) hold a JoinGroup for
about half the session timeout.
"""
import argparse
import base64
import json
import sys
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition


def text(b):
    return None if b is None else b.decode("utf-8", errors="replace")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True, help="bootstrap servers, host:port[,...]")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for a record")
    a = ap.parse_args()

    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": f"writ-interop-{uuid.uuid4().hex[:12]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "topic.metadata.refresh.interval.ms": 1000})
    deadline = time.monotonic() + a.timeout
    try:
        while True:  # wait for the topic to exist, then read all of its partitions from the start
            try:
                md = c.list_topics(a.topic, timeout=max(0.1, min(2.0, deadline - time.monotonic())))
                t = md.topics.get(a.topic)
                if t is not None and t.error is None and t.partitions:
                    break
            except KafkaException:
                pass
            if time.monotonic() >= deadline:
                print(f"timeout: topic {a.topic} not found within {a.timeout}s", file=sys.stderr)
                return 2
            time.sleep(0.2)
        c.assign([TopicPartition(a.topic, p, OFFSET_BEGINNING) for p in sorted(t.partitions)])
        while time.monotonic() < deadline:
            msg = c.poll(min(1.0, max(0.05, deadline - time.monotonic())))
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                # The topic may not exist yet, or the partition is at its end: keep waiting.
                if err.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART,
                                  KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION):
                    continue
                print(f"consume error: {err}", file=sys.stderr)
                continue
            print(json.dumps({
                "key": text(msg.key()),
                "headers": {k: text(v) for k, v in (msg.headers() or [])},
                "value_b64": base64.b64encode(msg.value() or b"").decode("ascii"),
                "partition": msg.partition(),
                "offset": msg.offset(),
            }))
            return 0
    finally:
        c.close()
    print(f"timeout: no record on {a.topic} within {a.timeout}s", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
