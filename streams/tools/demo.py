"""The live demo: a worker, a simulated customer base on fast-forward, and the changes as they happen.

Simulated time runs `speed` times faster than the wall clock: the simulator stamps events in
simulated time, and the worker reads the same simulated time from a clock file, so days pass in
a minute, windows slide and quiet accounts decay on the timer, as they would over weeks.
"""
from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from schemas.outputs import iso
from streams.core.days import DAY
from streams.tools.publisher import publish
from streams.sinks.readmodel import ReadModel
from streams.settings import Settings, Topics
from streams.tools.simulator import CustomerMix, customer_base, history, live
from streams.text import printable
from streams.topics import create_topics

RESET, BOLD, RED, GREEN, YELLOW, DIM = "\033[0m", "\033[1m", "\033[31m", "\033[32m", "\033[33m", "\033[2m"
BAND_COLOUR = {"Healthy": GREEN, "At Risk": YELLOW, "Needs Attention": RED}
_SGR = re.compile("\033\\[[0-9;]*m")  # the colour codes above, removed when the output is no terminal


class DemoFailed(RuntimeError):
    """The demo cannot go on (its worker exited); str() is the line to print."""


class SimulatedTime:
    """Simulated now = start + (wall elapsed) x speed; written to the worker's clock file."""

    def __init__(self, speed: float, clock_path: Path):
        self.speed = speed
        self.start_sim = time.time()
        self.start_wall = time.monotonic()
        self.clock_path = clock_path

    def now(self) -> float:
        return self.start_sim + (time.monotonic() - self.start_wall) * self.speed

    def wall_time_of(self, simulated: float) -> float:
        return time.time() + (simulated - self.now()) / self.speed

    async def keep_writing(self) -> None:
        while True:
            tmp = self.clock_path.with_suffix(".tmp")
            tmp.write_text(repr(self.now()))
            tmp.replace(self.clock_path)  # atomic: the worker never reads a half-written time
            await asyncio.sleep(0.1)


def topic_prefix(run: str) -> str:
    return f"demo-{run}."


def demo_settings(base: Settings, run: str) -> Settings:
    """Topics, consumer group and Redis keys of their own, so every demo run starts clean."""
    return replace(base, app_id=f"health-demo-{run}", redis_prefix=f"demo-{run}",
                   topics=Topics.from_env(topic_prefix(run)))


def exports(settings: Settings, run: str, clock_path: Path) -> list[str]:
    """The shell lines that point the other commands (show, what-if, produce, publish-model) at this demo's
    topics, consumer group (the table's changelog), Redis keys and simulated clock."""
    from urllib.parse import urlsplit

    values = {"HEALTH_KAFKA_BROKER": settings.broker, "HEALTH_REDIS_URL": settings.redis_url,
              "HEALTH_TOPIC_PREFIX": topic_prefix(run), "HEALTH_APP_ID": settings.app_id,
              "HEALTH_REDIS_PREFIX": settings.redis_prefix, "HEALTH_CLOCK_FILE": str(clock_path)}
    lines = []
    for name, value in values.items():
        if name == "HEALTH_REDIS_URL" and urlsplit(value).password:
            # never print a secret: this terminal's URL holds a password, the other one sets its own
            lines.append("# and HEALTH_REDIS_URL as in this terminal (not shown: it holds a password)")
        else:
            lines.append(f"export {name}={shlex.quote(value)}")
    return lines


async def run_demo(accounts: int, mix: CustomerMix, speed: float, history_days: int, duration: float | None,
                   seed: int, out=sys.stdout) -> None:
    run = time.strftime("%Y%m%d-%H%M%S")
    settings = demo_settings(Settings.from_env(), run)
    workdir = Path(tempfile.mkdtemp(prefix="health-demo-"))
    base = customer_base(accounts, mix, seed)
    say = Printer(out)
    say.line(f"{BOLD}customer health demo{RESET}: {accounts} accounts, simulated time x{speed:g}, "
             f"worker log {workdir / 'worker.log'}")
    # first, before minutes of output: the demo's names are its own (a clean start every run), so the
    # README's other commands see its data only with these
    example = f"health show {base[0].account_id}, " if base else ""
    say.line(f"In another terminal, for {example}health what-if FILE and the other commands to see this demo's "
             f"data, run:")
    for line in exports(settings, run, workdir / "clock"):
        say.line(f"  {line}")
    await create_topics(settings)
    sim = SimulatedTime(speed, workdir / "clock")
    clock_task = asyncio.create_task(sim.keep_writing())
    await asyncio.sleep(0.2)
    worker = start_worker(settings, topic_prefix(run), workdir, sim.clock_path)
    tasks = [clock_task]
    try:
        start = sim.now()
        report = await publish(history(base, start - history_days * DAY, start, seed), settings,
                               progress=lambda n: say.line(f"{DIM}history: {n} events published{RESET}"),
                               progress_every=20_000)
        say.line(f"history: {report.total} events of the last {history_days} days in {report.elapsed:.1f}s")
        stream = ((sim.wall_time_of(at), event) for at, event in live(base, sim.now(), seed, history_days=history_days))
        tasks.append(asyncio.create_task(publish(stream, settings)))
        tasks.append(asyncio.create_task(follow(settings, sim, say)))
        tasks.append(asyncio.create_task(summarise(settings, sim, say)))
        deadline = None if duration is None else time.monotonic() + duration
        while deadline is None or time.monotonic() < deadline:
            if worker.poll() is not None:
                raise DemoFailed(f"the demo's worker exited ({worker.returncode}): "
                                 f"{last_line(workdir / 'worker.log')}; its log: {workdir / 'worker.log'}")
            for task in tasks:
                if task.done() and task.exception():
                    raise task.exception()
            await asyncio.sleep(0.5)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # their own clean-up (Redis, consumers) runs now
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        say.line(f"demo stopped; topics {topic_prefix(run)}*, Redis keys {settings.redis_prefix}:*")


def last_line(log: Path) -> str:
    """The last line of a log (a worker that stops says why there, in one line), escaped."""
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return printable(lines[-1], 300) if lines else "no output"


def start_worker(settings: Settings, prefix: str, workdir: Path, clock_path: Path) -> subprocess.Popen:
    env = {**os.environ, "HEALTH_APP_ID": settings.app_id, "HEALTH_REDIS_PREFIX": settings.redis_prefix,
           "HEALTH_TOPIC_PREFIX": prefix, "HEALTH_CLOCK_FILE": str(clock_path),
           "HEALTH_REEVALUATE_SECONDS": "2"}
    script = Path(sys.executable).with_name("health")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "streams"]
    log = open(workdir / "worker.log", "ab")
    return subprocess.Popen(command + ["worker", "--without-web"], env=env, cwd=workdir, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


class Printer:
    """Lines to `out`, in colour only on a terminal (and unless NO_COLOR is set): a file or a pipe gets
    plain text."""

    def __init__(self, out):
        self.out = out
        isatty = getattr(out, "isatty", None)
        self.colour = bool(isatty and isatty()) and not os.environ.get("NO_COLOR")

    def line(self, text: str) -> None:
        print(text if self.colour else _SGR.sub("", text), file=self.out, flush=True)


def band(name: str | None) -> str:
    return f"{BAND_COLOUR.get(name, '')}{printable(name)}{RESET}" if name else "-"


def _changes(changes: list) -> str:
    """The three largest changes; an alert with nothing changed since its reference (a trend judged on a
    later day) lists the components as they stand: their points, not +0.0."""
    return ", ".join(f"{printable(c['component'])} {c['change']:+.1f}" if c["change"] else
                     f"{printable(c['component'])} {c['contribution_after']:.1f} pts" for c in changes[:3])


async def follow(settings: Settings, sim: SimulatedTime, say: Printer) -> None:
    """Print band changes and alerts as they are published, with what moved the score."""
    topics = settings.topics
    consumer = AIOKafkaConsumer(topics.scores, topics.alerts, **settings.kafka_options(),
                                group_id=None, auto_offset_reset="latest")
    seen: set[str] = set()  # alerts are published at least once: a consumer de-duplicates on the id
    try:
        await consumer.start()  # inside: a start that fails is stopped too, and leaves no unclosed client
        async for record in consumer:
            value = orjson.loads(record.value)
            when = iso(sim.now())[:16].replace("T", " ")
            if record.topic == topics.alerts:
                if value["id"] in seen:
                    continue
                seen.add(value["id"])
                data = value["data"]
                why = _changes(data["explanation"])
                if value["type"] == "health.component.threshold":
                    detail = data["detail"]
                    why = (f"{printable(detail['component'])} at {detail['component_score']:.0f}, "
                           f"below {detail['below']:.0f}")
                # names come from the records (producers, the model): escaped, so none drives the terminal
                say.line(f"{when}  {BOLD}ALERT {printable(value['type'])}{RESET}  {printable(value['subject'])}  "
                         f"{band(data['band_before'])} -> {band(data['band_after'])}  "
                         f"{data['score_before']} -> {data['score_after']}  ({why})")
            elif value["previous_band"] and value["band"] != value["previous_band"]:
                why = _changes(value["changes"])
                say.line(f"{when}  {printable(value['account_id'])}  {band(value['previous_band'])} -> "
                         f"{band(value['band'])}  "
                         f"{value['previous_score']} -> {value['score']}  [{value['cause']}] ({why})")
    finally:
        await consumer.stop()


async def summarise(settings: Settings, sim: SimulatedTime, say: Printer) -> None:
    read_model = ReadModel.from_settings(settings)
    try:
        while True:
            await asyncio.sleep(10)
            counts = await read_model.band_counts(list(BAND_COLOUR))
            worst = await read_model.ranking(3)
            say.line(f"{DIM}{iso(sim.now())[:10]}{RESET}  " + "  ".join(f"{band(b)} {n}" for b, n in counts.items())
                     + "   lowest: " + ", ".join(f"{printable(a)} {s:.0f}" for a, s in worst))
    finally:
        await read_model.close()
