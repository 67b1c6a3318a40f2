"""The batching consumer's contract through the real broker: every record is handed to the handler
until the handler accepts it; a refused batch is not skipped."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT, create_topics, produce, wait_for

pytestmark = pytest.mark.broker


def test_refused_batches_are_read_again_until_accepted(stack, unique, tmp_path):
    topic = f"{unique}.input"
    asyncio.run(create_topics(stack.bootstrap, [topic], 2))
    asyncio.run(produce(stack.bootstrap, topic, [(f"k{i}".encode(), b"{}") for i in range(400)]))
    accepted = tmp_path / "accepted"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "APP_ID": unique, "BROKER": stack.broker_url, "TOPIC": topic,
           "REFUSE_BATCHES": "3", "ACCEPTED_FILE": str(accepted)}
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "faust", "-A", "tests.integration.refusing_app", "worker",
                                 "--without-web", "-l", "info"], env=env, cwd=tmp_path, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def offsets():
            lines = accepted.read_text().split() if accepted.exists() else []
            return {(int(p), int(o)) for p, o in zip(lines[::2], lines[1::2])}

        wait_for(lambda: len(offsets()) == 400, timeout=60, what=f"all 400 records accepted (log: {log})")
        assert {o for p, o in offsets()} <= set(range(400)) and "refused batch 3" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(30)
