"""Creating the worker's topics ahead of it, as an operator (or the demo and the benchmark) would."""
from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.settings import Settings

log = logging.getLogger(__name__)


# The control topic keeps the latest model under one key forever (see streams.worker.control).
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
    admin = AIOKafkaAdminClient(**settings.kafka_options())
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


async def warn_unless_compacted(bootstrap: str, topic: str, consequence: str,
                                client_options: dict | None = None) -> None:
    """Warn when a topic that must be log-compacted is not (one created before by other tooling keeps its
    settings; the README says how to alter it)."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(client_options or {}))
    try:
        await admin.start()
        response = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                                {"cleanup.policy": None})])
        entries = response[0].to_object()["resources"][0]["config_entries"]
        policy = next((e["config_value"] for e in entries if e["config_names"] == "cleanup.policy"), "")
    except Exception as exc:  # noqa: BLE001 - only a warning is at stake
        log.debug("could not read the config of %s (%s)", topic, exc)
        return
    finally:
        try:
            await admin.close()
        except Exception:  # noqa: BLE001
            pass
    if "compact" not in (policy or ""):
        log.warning("topic %s has cleanup.policy=%s: %s; make it compacted (README, 'Topics that must be "
                    "compacted')", topic, policy, consequence)
