#!/usr/bin/env python3
"""Produce one command record with an independent client (confluent_kafka, not writ).

Used by writ's interop tests to prove that any producer speaking the CloudEvents
Kafka binding (binary mode: plain UTF-8 headers) can publish a command.
Prints {"partition": P, "offset": O} as JSON on success.
"""
import argparse
import json
import sys

from confluent_kafka import KafkaException, Producer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True, help="bootstrap servers, host:port[,...]")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--key", help="record key (UTF-8); omitted = null key")
    ap.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                    help="a header, repeatable; the value is sent as UTF-8 bytes")
    val = ap.add_mutually_exclusive_group(required=True)
    val.add_argument("--value-file", help="read the value bytes from this file")
    val.add_argument("--value-json", help="the value, as a JSON text (sent verbatim, UTF-8)")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for the ack")
    a = ap.parse_args()

    headers = []
    for h in a.header:
        name, sep, value = h.partition("=")
        if not sep:
            ap.error(f"--header must be NAME=VALUE, got {h!r}")
        headers.append((name, value.encode("utf-8")))
    if a.value_file is not None:
        with open(a.value_file, "rb") as f:
            value = f.read()
    else:
        json.loads(a.value_json)  # fail early on invalid JSON
        value = a.value_json.encode("utf-8")

    result = {}

    def on_delivery(err, msg):
        if err is not None:
            result["error"] = str(err)
        else:
            result.update(partition=msg.partition(), offset=msg.offset())

    p = Producer({"bootstrap.servers": a.bootstrap, "enable.idempotence": True, "acks": "all",
                  "message.timeout.ms": int(a.timeout * 1000)})
    try:
        p.produce(a.topic, value=value,
                  key=a.key.encode("utf-8") if a.key is not None else None,
                  headers=headers, on_delivery=on_delivery)
    except KafkaException as e:
        print(f"produce failed: {e}", file=sys.stderr)
        return 1
    remaining = p.flush(a.timeout + 5)
    if remaining or "error" in result or not result:
        print(f"produce failed: {result.get('error', 'not acknowledged in time')}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
