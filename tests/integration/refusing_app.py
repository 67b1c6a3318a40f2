"""A minimal HealthApp whose batch handler refuses its first batches, as the pipeline does while a
rebalance finishes; it writes every record it accepts to a file. Run by test_batching.py."""
import os

from streams.worker.batching import HealthApp

refuse = int(os.environ["REFUSE_BATCHES"])
accepted_path = os.environ["ACCEPTED_FILE"]

app = HealthApp(os.environ["APP_ID"], broker=os.environ["BROKER"], store="memory://", topic_partitions=2,
                key_serializer="raw", value_serializer="raw", consumer_auto_offset_reset="earliest")
calls = 0


async def handler(batches, generation) -> bool:
    global calls
    calls += 1
    if calls <= refuse:
        print(f"refused batch {calls}", flush=True)
        return False
    with open(accepted_path, "a") as out:
        for batch in batches:
            out.writelines(f"{batch.tp.partition} {record.offset}\n" for record in batch.records)
    return True


@app.agent(app.fetched_batches(app.topic(os.environ["TOPIC"])))
async def accept(fetches):
    async for fetch in fetches:
        await fetch.handle(handler)
