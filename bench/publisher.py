"""A flooding client, run as its own process: publish N commands as fast as it can."""

from __future__ import annotations

import argparse
import time

from hand_mqtt import BrokerUrl, MqttClient


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    client = MqttClient(BrokerUrl.parse(args.broker), name="flood")
    client.connect()
    start = time.perf_counter()
    for n in range(args.count - 1):
        client.publish(args.topic, str((n * 7 + args.seed) % 181), qos=1)
    # The last one waits for the broker's acknowledgement: with QoS 1 in order, all are in.
    client.publish(args.topic, str(args.seed % 181), qos=1, wait=120)
    elapsed = time.perf_counter() - start
    client.stop()
    print(f"{args.count} {elapsed:.6f}")


if __name__ == "__main__":
    main()
