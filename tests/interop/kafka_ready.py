#!/usr/bin/env python3
"""Exit 0 once a Kafka-protocol broker answers a metadata request (used by tests/run.sh)."""
import argparse
import sys

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds for one metadata request")
    a = ap.parse_args()
    admin = AdminClient({"bootstrap.servers": a.bootstrap, "log_level": 0})
    try:
        md = admin.list_topics(timeout=a.timeout)
    except KafkaException as e:
        print(f"not ready: {e}", file=sys.stderr)
        return 1
    print(f"brokers={len(md.brokers)} topics={len(md.topics)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
