"""Gestures: have the arbiter play one, follow its steps, and end one early.

python examples/gestures.py
"""

import os

from hand_mqtt import HandClient

broker = os.environ.get("HAND_MQTT_BROKER", "mqtt://127.0.0.1:1883")
base = os.environ.get("HAND_MQTT_BASE", "hand")
name = os.environ.get("HAND_MQTT_HAND", "hand1")

with HandClient(broker, hand=name, base=base) as hand:
    print("gestures:", ", ".join(hand.gestures))

    # Follow the steps as the arbiter publishes them, each an ordinary state.
    with hand.changes() as changes:
        first = hand.play("wave")
        seen = first.version - 1
        for snapshot in changes:
            state = snapshot.desired
            if state is None or state.version <= seen:
                continue  # a report from the device, or a step already shown
            seen = state.version
            if state.gesture is None:
                print("finished at", state.angles)
                break
            print(f"step {state.gesture.step} of {state.gesture.steps}:", state.angles)

    # Any other command ends a gesture at once.
    hand.play("count")
    stopped = hand.pose("peace")
    print("count ended by a pose:", stopped.pose, stopped.gesture)

    # Or wait for a gesture to finish, and for the device to report the hand there.
    ended = hand.play("count", wait="reported")
    print("count finished, reported", hand.reported.angles if hand.reported else None)
