"""Creating the worker's topics ahead of it, as an operator (or the demo and the benchmark) would."""
from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.settings import Settings


# The control topic keeps the latest model under one key forever (see streams.control).
CONTROL_TOPIC_CONFIG = {"cleanup.policy": "compact"}
# The score topic is compacted by account, so a read model rebuild finds every account's latest update
# however old, and only after a week, so subscribers still see every update of the last seven days.
SCORE_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": str(7 * 24 * 3600 * 1000)}


def changelog_topic(settings: Settings) -> str:
    """The account table's changelog (Faust names it after the app id and the table)."""
    return f"{settings.app_id}-accounts-changelog"


async def create_topics(settings: Settings, replication: int = 1) -> None:
    """Every account-keyed topic with the table's partition count; the control topic with one.
    Topics that exist already are left as they are (the worker checks their size at start)."""
    t = settings.topics
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        keyed = (t.usage, t.tickets, t.surveys, t.accounts, t.scores, t.alerts, t.deadletter)
        wanted = [NewTopic(n, settings.partitions, replication,
                           topic_configs=SCORE_TOPIC_CONFIG if n == t.scores else None)
                  for n in keyed if n not in existing]
        if t.control not in existing:
            wanted.append(NewTopic(t.control, 1, replication, topic_configs=CONTROL_TOPIC_CONFIG))
        if wanted:
            await admin.create_topics(wanted)
    finally:
        await admin.close()
