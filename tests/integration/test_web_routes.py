"""The worker's web server answers only the documented read API; Faust's own views are off.

Faust mounts views of its own beside an app's pages: /table lists the tables and serves their values
(here every account's raw state), /router the cluster's layout, / and /assignment statistics and
partition assignments, /graph the service graph. The worker drops them (streams.worker.batching.HealthApp);
HEALTH_WEB_FAUST_VIEWS=1 brings them back for debugging, which the second worker here checks, so a
404 below means "switched off", not "a path that never existed".
"""
from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest

from schemas.events import UsageEvent, encode_event
from tests.harness import Worker, free_port, produce, wait_for
from tests.integration.pipeline_helpers import NOW, clock_file

pytestmark = pytest.mark.broker

DOCUMENTED = ["/health/live", "/health/ready", "/accounts/web-acct-1", "/bands", "/metrics"]  # README, "Read API"
FAUST_VIEWS = ["/", "/router/", "/table/", "/table/accounts/", "/graph/", "/assignment/"]


def status(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None  # not listening (yet)


def test_only_the_documented_routes_answer(stack, worker_env, unique, tmp_path):
    port = free_port()
    env = {**worker_env, "HEALTH_WEB_PORT": str(port), "HEALTH_CLOCK_FILE": str(clock_file(tmp_path))}
    event = UsageEvent("web-1", "web-acct-1", NOW - 60, "login", "u1")
    asyncio.run(produce(stack.bootstrap, f"{unique}.usage", [(b"web-acct-1", encode_event(event))]))
    with Worker(env, tmp_path, name="worker") as worker:
        # every documented route answers 200 once the worker is ready and the account is scored (in Redis)
        wait_for(lambda: all(status(port, path) == 200 for path in DOCUMENTED) or not worker.alive(), 90,
                 interval=0.5, what="the documented routes to answer 200")
        assert worker.alive(), worker.report()
        answers = {path: status(port, path) for path in FAUST_VIEWS}
        assert answers == {path: 404 for path in FAUST_VIEWS}, answers
        assert status(port, "/accounts/no-such-account") == 404  # the read API's own 404, for comparison

    # the debugging switch: Faust's views are served again (those it serves by default, without its debug mode)
    port = free_port()
    with Worker({**env, "HEALTH_WEB_PORT": str(port), "HEALTH_WEB_FAUST_VIEWS": "1"}, tmp_path,
                name="worker-views") as worker:
        wait_for(lambda: status(port, "/health/ready") == 200 or not worker.alive(), 90, interval=0.5,
                 what="the worker with Faust's views to be ready")
        assert worker.alive(), worker.report()
        answers = {path: status(port, path) for path in ("/", "/router/", "/table/")}
        assert answers == {"/": 200, "/router/": 200, "/table/": 200}, answers
