"""Follow a hand: print every change (desired, reported, refusals) in this thread.

python examples/follow_changes.py [COUNT]     # stop after COUNT changes (default: never)
"""

import os
import sys

from hand_mqtt import HandClient

broker = os.environ.get("HAND_MQTT_BROKER", "mqtt://127.0.0.1:1883")
base = os.environ.get("HAND_MQTT_BASE", "hand")
name = os.environ.get("HAND_MQTT_HAND", "hand1")
count = int(sys.argv[1]) if len(sys.argv) > 1 else None

with HandClient(broker, hand=name, base=base, require_state=False) as hand:
    print("following", hand.hand_topics.root, flush=True)
    for seen, snapshot in enumerate(hand.changes(), start=1):
        if snapshot.error is not None:
            print("refused:", snapshot.error.error, flush=True)
        elif snapshot.desired is not None:
            reported = snapshot.reported.angles if snapshot.reported else None
            print("desired", snapshot.desired.angles, "reported", reported, flush=True)
        if count is not None and seen >= count:
            break
