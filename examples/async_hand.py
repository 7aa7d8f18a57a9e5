"""The same hand from asyncio: commands are coroutines, changes arrive with `async for`.

python examples/async_hand.py
"""

import asyncio
import os

from hand_mqtt import AsyncHandClient

broker = os.environ.get("HAND_MQTT_BROKER", "mqtt://127.0.0.1:1883")
base = os.environ.get("HAND_MQTT_BASE", "hand")
name = os.environ.get("HAND_MQTT_HAND", "hand1")


async def watch(hand: AsyncHandClient, until_version: int) -> None:
    """Print the desired angles each time they change, until a version is reached."""
    async for snapshot in hand.changes():
        if snapshot.desired is not None:
            print("desired", snapshot.desired.angles, "version", snapshot.desired.version)
            if snapshot.desired.version >= until_version:
                return


async def main() -> None:
    async with AsyncHandClient(broker, hand=name, base=base) as hand:
        assert hand.state is not None
        start = hand.state.version
        # The watcher runs on the same event loop while the commands are in flight.
        watcher = asyncio.create_task(watch(hand, start + 3))
        await hand.pose("fist")
        await hand.set(index=180)
        final = await hand.angles([180, 180, None, None, None], wait="reported")
        await asyncio.wait_for(watcher, 10)
        print("done at", final.angles)


asyncio.run(main())
