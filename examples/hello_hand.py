"""Drive a hand from a Python program: poses, fingers, nudges, and waiting for the hand.

    python examples/hello_hand.py            # with `hand-mqtt up` (or `make run`) running

HAND_MQTT_BROKER, HAND_MQTT_BASE and HAND_MQTT_HAND choose the broker and the hand, as they do
for the command line.
"""

import os

from hand_mqtt import CommandError, HandClient

broker = os.environ.get("HAND_MQTT_BROKER", "mqtt://127.0.0.1:1883")
base = os.environ.get("HAND_MQTT_BASE", "hand")
name = os.environ.get("HAND_MQTT_HAND", "hand1")

with HandClient(broker, hand=name, base=base) as hand:
    print("the hand starts at", hand.state)

    # Each command returns the new desired state once the arbiter has accepted it...
    state = hand.pose("peace")
    print("peace is version", state.version)

    # ...or, with wait="reported", once the device reports the hand there.
    state = hand.set(index=90, thumb=0, wait="reported")
    print("reported:", hand.reported.angles if hand.reported else None)

    hand.nudge("index", -15)
    hand.angles([180, None, 0, 0, 0])  # None leaves the middle finger where it is

    # A command the arbiter refuses raises its sentence.
    try:
        hand.set(ring=500)
    except CommandError as refusal:
        print("refused:", refusal)

    final = hand.pose("rockstar", wait="reported")
    print("done at", final.angles, "online:", hand.online)
