"""A lightweight device stand-in for many hands: acknowledges every state over MQTT."""

from __future__ import annotations

import argparse
import json
import signal
import threading

from hand_mqtt import BrokerUrl, Message, MqttClient


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--base", required=True)
    args = parser.parse_args()
    client = MqttClient(BrokerUrl.parse(args.broker), name="standin")
    prefix = args.base + "/"

    def on_state(message: Message) -> None:
        hand = message.topic[len(prefix) : -len("/state")]
        state = json.loads(message.payload)
        reported = {
            finger: state[finger] for finger in ("index", "middle", "ring", "pinky", "thumb")
        }
        reported.update(link="up", version=state["version"])
        client.publish(f"{prefix}{hand}/reported", json.dumps(reported), qos=0, retain=True)

    client.subscribe(f"{prefix}+/state", on_state, qos=0)
    client.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    client.stop()


if __name__ == "__main__":
    main()
