"""The floor for two broker hops: subscribe, parse a tiny JSON, republish retained.

Run as its own process, like the arbiter, so the comparison is fair.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--inbound", required=True)
    parser.add_argument("--outbound", required=True)
    args = parser.parse_args()

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)

    def on_connect(c: paho.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        sock = c.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.subscribe(args.inbound, qos=1)

    def on_message(c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        data = json.loads(message.payload)
        c.publish(args.outbound, json.dumps({"value": data}), qos=1, retain=True)

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect("127.0.0.1", args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client.loop_start()
    stop.wait()
    client.loop_stop()
    client.disconnect()


if __name__ == "__main__":
    main()
