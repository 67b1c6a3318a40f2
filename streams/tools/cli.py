"""The `health` command line: run a worker, feed events, look at scores, check and roll out models."""
from __future__ import annotations

import asyncio
import functools
import gc
import sys
import time
from pathlib import Path

import click

from streams import preflight
from streams.connections import ConnectionSettingError
from streams.settings import Settings
from streams.text import printable


class Unusable(click.ClickException):
    """The stack or a setting cannot be used as configured: one line on stderr, exit code 2 (1 is a
    command's own refusal: bad lines, an invalid model, no score)."""

    exit_code = 2


class HealthGroup(click.Group):
    """Runs every command so that a problem with the stack or the settings ends as one line naming the
    address, the setting and the fix, never a traceback: what the checks found before the command
    (streams.preflight), a setting refused on the way, and a connection lost half-way through."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except preflight.NotReachable as exc:
            raise Unusable(str(exc)) from None
        except ConnectionSettingError as exc:  # a setting read lazily (a TLS file loaded at first use)
            raise Unusable(f"{preflight.one_line(exc)}; {preflight.SETTING_HINT}") from None
        except Exception as exc:
            line = preflight.lost_connection(exc, _settings_or_none())
            if line is None:
                raise
            raise Unusable(line) from None


def _settings_or_none() -> Settings | None:
    try:
        return Settings.from_env()
    except ValueError:
        return None


def needs(*, kafka: bool = False, redis: bool = False, web: bool = False, model: str | None = None,
          current_model: bool = False, redis_optional: bool = False):
    """What a command uses, checked before its body runs, cheap checks first: the model file of the
    argument `model` (refused with its problems, exit 1, whether or not the stack runs), the settings, the
    model of HEALTH_MODEL (`current_model`), then (streams.preflight.ready) the web port (`web`: the
    worker's --web/--web-port options), Kafka, Redis (`redis_optional`: a Redis nobody listens for is a
    warning, for the worker, which scores without it). Goes under the click decorators, so it wraps the
    command's own function."""
    def decorate(command):
        @functools.wraps(command)
        def checked(*args, **kwargs):
            if model is not None:
                _load_model(kwargs[model])
            settings = preflight.load_settings()
            if current_model:
                _load_model(settings.model_path, setting="HEALTH_MODEL")
            preflight.ready(settings, kafka=kafka, redis=redis, web=web and kwargs["web"],
                            web_port=kwargs.get("web_port") if web else None, redis_optional=redis_optional,
                            warn=lambda line: click.echo(f"Warning: {line}", err=True))
            return command(*args, **kwargs)
        return checked
    return decorate


@click.group(cls=HealthGroup)
def cli() -> None:
    """Real-time customer health engine. Settings come from HEALTH_* environment variables (see README)."""


@cli.command()
@click.option("-l", "--loglevel", default="info", type=click.Choice(["crit", "error", "warn", "info", "debug"]))
@click.option("-L", "--loop", default="uvloop", type=click.Choice(["aio", "uvloop"]),
              help="uvloop (default) costs fewer cycles per event-loop iteration: measurably faster.")
@click.option("--web/--without-web", default=True, help="Serve the read API, health checks and /metrics.")
@click.option("--web-port", type=click.IntRange(1, 65535), default=None, help="Overrides HEALTH_WEB_PORT.")
@needs(kafka=True, redis=True, redis_optional=True, web=True, current_model=True)
def worker(loglevel: str, loop: str, web: bool, web_port: int | None) -> None:
    """Run a worker."""
    import mode.loop

    from streams.worker.app import create_app

    settings = Settings.from_env()
    mode.loop.use(loop)  # before the app exists: it takes the loop current at creation, ignoring faust's --loop
    app = create_app(settings)
    app.log_level = loglevel
    argv = ["health worker", "--loglevel", loglevel, "--loop", loop, "worker",
            "--web-bind", settings.web_host, "--web-port", str(web_port or settings.web_port)]
    argv += [] if web else ["--without-web"]
    sys.argv = argv  # faust's own CLI parses sys.argv; it overrides web settings with its flags
    # A batch allocates and frees hundreds of thousands of small objects, nearly all freed by
    # reference counting; at the default threshold (700) the collector runs thousands of times
    # per batch over the worker's heap. Measured on ops/bench/bench_handler.py: 8 % faster.
    # Objects alive now (modules, the app) are never garbage: frozen, no collection scans them.
    gc.set_threshold(50_000, 20, 100)
    gc.freeze()
    app.main()


@cli.command("read-model")
@click.option("-l", "--loglevel", default="info", type=click.Choice(["crit", "error", "warn", "info", "debug"]))
@click.option("--web-port", type=click.IntRange(1, 65535), default=None,
              help="Port of its /metrics (default HEALTH_WEB_PORT).")
@needs(kafka=True, redis=True)
def read_model(loglevel: str, web_port: int | None) -> None:
    """Write score updates into the Redis read model, apart from the workers (HEALTH_READ_MODEL_SINK=separate)."""
    import logging

    from streams.sinks.readmodel_service import serve

    settings = Settings.from_env()
    port = web_port or settings.web_port
    preflight.check_port(settings.web_host, port, "--web-port" if web_port else "HEALTH_WEB_PORT")
    logging.basicConfig(level={"crit": "CRITICAL", "warn": "WARNING"}.get(loglevel, loglevel.upper()),
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    asyncio.run(serve(settings, port))


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(["usage", "ticket", "survey", "account"]),
              help="Kind of every event, for files whose records carry no `kind` field.")
@click.option("--rate", type=click.FloatRange(0, min_open=True), default=None,
              help="At most this many events per second.")
@needs(kafka=True)
def produce(path: Path, kind: str | None, rate: float | None) -> None:
    """Publish events from a JSONL or CSV file; bad lines are reported with their line number and skipped."""
    from schemas.events import InvalidEvent
    from streams.tools.event_files import read_events
    from streams.tools.publisher import publish

    _quiet_retries()
    bad = 0

    def valid():
        nonlocal bad
        for line, item in read_events(path, kind):
            if isinstance(item, InvalidEvent):
                bad += 1
                click.echo(f"{path}:{line}: {item}", err=True)
            else:
                yield item

    with click.progressbar(length=0, label="publishing", show_pos=True) as bar:
        def progress(sent: int) -> None:
            bar.update(sent - bar.pos)

        report = asyncio.run(publish(valid(), Settings.from_env(), rate=rate, progress=progress, progress_every=1000))
    click.echo(f"published {report.total} events ({_counts(report.counts)}) in {report.elapsed:.1f}s; "
               f"{bad} bad lines skipped")
    sys.exit(1 if bad else 0)


@cli.command()
@click.option("--accounts", default=200, show_default=True, help="Accounts in the simulated customer base.")
@click.option("--healthy", default=0.7, show_default=True)
@click.option("--declining", default=0.2, show_default=True)
@click.option("--churning", default=0.1, show_default=True)
@click.option("--days", default=60, show_default=True, help="Days of history to publish first (0: none).")
@click.option("--live/--no-live", default=False, help="Then keep producing in real time.")
@click.option("--rate", type=float, default=None, help="Live events per second (default: the base's natural volume).")
@click.option("--duration", type=float, default=None, help="Seconds of live production (default: until Ctrl-C).")
@click.option("--seed", default=0, show_default=True)
@needs(kafka=True)
def simulate(accounts: int, healthy: float, declining: float, churning: float, days: int, live: bool,
             rate: float | None, duration: float | None, seed: int) -> None:
    """Simulate a customer base: its history as fast as possible, then (--live) events in real time."""
    from streams.tools import simulator
    from streams.core.days import DAY
    from streams.tools.publisher import publish

    _quiet_retries()
    settings = Settings.from_env()
    base = simulator.customer_base(accounts, simulator.CustomerMix(healthy, declining, churning), seed)
    now = time.time()
    if days:
        with click.progressbar(length=0, label=f"history of {days} days", show_pos=True) as bar:
            report = asyncio.run(publish(simulator.history(base, now - days * DAY, now, seed), settings,
                                         progress=lambda n: bar.update(n - bar.pos)))
        click.echo(f"history: {report.total} events ({_counts(report.counts)}) in {report.elapsed:.1f}s")
    if live:
        click.echo("live: producing in real time, Ctrl-C to stop")
        stream = simulator.live(base, time.time(), seed, rate, duration=duration, history_days=max(days, 1))
        try:
            report = asyncio.run(publish(stream, settings, progress=lambda n: click.echo(f"live: {n} events"),
                                         progress_every=1000))
        except KeyboardInterrupt:
            return
        click.echo(f"live: {report.total} events in {report.elapsed:.1f}s")


@cli.command()
@click.option("--accounts", default=200, show_default=True)
@click.option("--speed", default=3600.0, show_default=True, help="Simulated seconds per wall-clock second.")
@click.option("--history-days", default=45, show_default=True)
@click.option("--duration", type=float, default=None, help="Wall-clock seconds (default: until Ctrl-C).")
@click.option("--seed", default=0, show_default=True)
@needs(kafka=True, redis=True)
def demo(accounts: int, speed: float, history_days: int, duration: float | None, seed: int) -> None:
    """Live demo on the local stack: a worker, a simulated customer base, band changes and alerts as they happen."""
    import signal

    from streams.tools.demo import DemoFailed, run_demo
    from streams.tools.simulator import CustomerMix

    _quiet_retries()

    async def until_stopped() -> None:
        # Ctrl-C and SIGTERM (from `timeout` or a supervisor) cancel the demo inside the loop, so its
        # tasks and the worker are stopped and closed before the loop goes away
        main = asyncio.current_task()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, main.cancel)
        try:
            await run_demo(accounts, CustomerMix(), speed, history_days, duration, seed)
        except asyncio.CancelledError:
            pass

    try:
        asyncio.run(until_stopped())
    except DemoFailed as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.argument("account_id")
@needs(redis=True)
def show(account_id: str) -> None:
    """Show an account's current health and what moved it last, from the Redis read model."""
    from streams.sinks.readmodel import ReadModel

    settings = Settings.from_env()

    async def read():
        read_model = ReadModel.from_settings(settings)
        try:
            return await read_model.account(account_id), await read_model.history(account_id)
        finally:
            await read_model.close()

    record, history = asyncio.run(read())
    if record is None:
        raise click.ClickException(f"no score for account {printable(account_id)!r} in {settings.redis_url} "
                                   f"(prefix {settings.redis_prefix!r})")
    # every name printed comes from outside (producers, the model file): escaped, so none drives the terminal
    band = record["band"] or record.get("status") or "-"  # insufficient_data: a score, too little data for a band
    click.echo(printable(f"{account_id}: {record['score']} {band}  (segment {record['segment']}, "
                         f"coverage {record['coverage']:.0%}, model {record['model_version']}, "
                         f"updated {record['computed_at']})"))
    click.echo(f"{'component':<22}{'value':>10}{'score':>8}{'weight':>8}{'points':>8}")
    for name, c in sorted(record["components"].items(), key=lambda kv: -kv[1]["contribution"]):
        value = "-" if c["value"] is None else f"{c['value']:.2f}"
        score = "-" if c["score"] is None else f"{c['score']:.0f}"
        click.echo(f"{printable(name):<22}{value:>10}{score:>8}{c['weight']:>8.2f}{c['contribution']:>8.1f}")
    if record.get("snooze"):
        snoozed = record["snooze"]
        click.echo(printable(f"alerts snoozed until {snoozed['until']}: {snoozed['reason']}"))
    if record["changes"]:
        click.echo(f"last change ({record['cause']}): {record['previous_score']} -> {record['score']}: " + ", ".join(
            f"{printable(c['component'])} {c['change']:+.1f}" for c in record["changes"]))
    if history:
        click.echo("history: " + " ".join(f"{s:.0f}" for _, s in history[-20:]))


@cli.command("check-model")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check_model(path: Path) -> None:
    """Validate a health model file and build it as a worker does; print every problem with the path of the field."""
    model = _load_model(path)
    segments = ", ".join(s.name for s in model.segments) or "default only"
    click.echo(f"{path}: valid, version {model.version}: {len(model.components)} components, "
               f"bands {', '.join(b.name for b in model.bands)}; segments: {segments}")


@cli.command("publish-model")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@needs(kafka=True, model="path")
def publish_model(path: Path) -> None:
    """Roll a validated model out to every worker through the control topic."""
    from aiokafka import AIOKafkaProducer

    from streams.worker.control import MODEL_KEY, model_message

    model = _load_model(path)
    settings = Settings.from_env()

    async def send():
        producer = AIOKafkaProducer(**settings.kafka_options())
        await producer.start()
        try:  # one key: the compacted topic keeps the latest model
            # signed with HEALTH_CONTROL_SECRET when set: workers that have it take only signed models
            await producer.send_and_wait(settings.topics.control,
                                         model_message(path.read_text(), model.version, settings.control_secret),
                                         key=MODEL_KEY, partition=0)
        finally:
            await producer.stop()

    asyncio.run(send())
    signed = ", signed with HEALTH_CONTROL_SECRET" if settings.control_secret else ""
    click.echo(f"model {model.version} published to {settings.topics.control}{signed}")


@cli.command()
@click.argument("account_id")
@click.option("--until", "until", required=True, metavar="DATE", callback=lambda ctx, param, v: _moment(v),
              help="ISO 8601 date (2026-12-24: until that day begins, UTC) or date and time")
@click.option("--reason", required=True, callback=lambda ctx, param, v: _reason(v),
              help="why, for whoever reads the account (at most 500 characters)")
@needs(kafka=True)
def snooze(account_id: str, until: float, reason: str) -> None:
    """Publish no alert of ACCOUNT_ID until DATE (through the control topic, to every worker)."""
    from streams.clock import clock_from

    settings = Settings.from_env()
    now = clock_from(settings.clock_file).now()  # the workers' clock
    if until <= now:
        raise click.BadParameter(f"{_iso(until)} is not in the future", param_hint="--until")
    _send_snooze(settings, _account(account_id), until, reason, now)
    click.echo(printable(f"{account_id}: alerts snoozed until {_iso(until)} ({reason})"))


@cli.command()
@click.argument("account_id")
@needs(kafka=True)
def unsnooze(account_id: str) -> None:
    """End the snooze of ACCOUNT_ID: its alerts are published again."""
    from streams.clock import clock_from

    settings = Settings.from_env()
    _send_snooze(settings, _account(account_id), None, "", clock_from(settings.clock_file).now())
    click.echo(printable(f"{account_id}: snooze ended"))


def _moment(text: str) -> float:
    """Epoch seconds of an ISO 8601 date (its start, UTC) or date and time (UTC unless it names a zone)."""
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(f"expected an ISO 8601 date or date and time, got {text!r}",
                                 param_hint="--until") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _reason(text: str) -> str:
    from streams.worker.control import MAX_SNOOZE_REASON_CHARS

    if not text.strip() or len(text) > MAX_SNOOZE_REASON_CHARS:
        raise click.BadParameter(f"expected 1 to {MAX_SNOOZE_REASON_CHARS} characters, got {len(text)}",
                                 param_hint="--reason")
    return text


def _account(account_id: str) -> str:
    from streams.worker.control import MAX_ACCOUNT_ID_CHARS

    if not 0 < len(account_id) <= MAX_ACCOUNT_ID_CHARS:
        raise click.BadParameter(f"expected 1 to {MAX_ACCOUNT_ID_CHARS} characters", param_hint="ACCOUNT_ID")
    return account_id


def _iso(ts: float) -> str:
    from schemas.outputs import iso

    return iso(ts)


def _send_snooze(settings: Settings, account_id: str, until: float | None, reason: str, now: float) -> None:
    from aiokafka import AIOKafkaProducer

    from streams.worker.control import snooze_key, snooze_message

    async def send():
        producer = AIOKafkaProducer(**settings.kafka_options())
        await producer.start()
        try:  # one key per account: compaction keeps each account's latest snooze
            await producer.send_and_wait(settings.topics.control,
                                         snooze_message(account_id, until, reason, now, settings.control_secret),
                                         key=snooze_key(account_id), partition=0)
        finally:
            await producer.stop()

    asyncio.run(send())


@cli.command("what-if")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=0),
              help="accounts that change band to list (the largest score changes first)")
@needs(kafka=True, model="path", current_model=True)
def what_if(path: Path, limit: int) -> None:
    """Score the current account state under another model file and compare with the model the workers run
    (the latest valid model on the control topic, else HEALTH_MODEL): bands before and after, the accounts
    that change band, and each component's score distribution."""
    from streams.clock import clock_from
    from streams.topics import changelog_topic
    from streams.tools.whatif import PERCENTILES, compare, read_states
    from streams.worker.control import ControlChannel

    settings = Settings.from_env()
    candidate = _load_model(path)
    control = ControlChannel(settings.bootstrap_servers, settings.topics.control,
                             client_options=settings.kafka_security.client_options(), secret=settings.control_secret)
    source = f"the control topic {settings.topics.control}"
    try:
        current = asyncio.run(control.load(timeout=30.0))
    except Exception as err:  # noqa: BLE001 - KafkaError, a timeout: compare with the file, and say so
        click.echo(f"Warning: could not read {settings.topics.control} ({type(err).__name__}: "
                   f"{printable(str(err), 200)}); comparing with HEALTH_MODEL", err=True)
        current = None
    if current is None:
        current = _load_model(settings.model_path, setting="HEALTH_MODEL")
        source = f"HEALTH_MODEL {settings.model_path}"
    states = asyncio.run(read_states(settings))
    if not states:
        raise click.ClickException(f"no account state in {changelog_topic(settings)}: is a worker running?")
    report = compare(states, current, candidate, clock_from(settings.clock_file).now())  # the workers' clock
    click.echo(f"model in force: {printable(current.version, 80)} (from {source})")
    click.echo(f"{len(states)} accounts; {printable(current.version, 80)} -> {printable(candidate.version, 80)}")
    click.echo(f"{'band':<18}{'before':>8}{'after':>8}")
    for name in report.bands:
        click.echo(f"{name:<18}{report.before.get(name, 0):>8}{report.after.get(name, 0):>8}")
    click.echo(f"{report.moved} accounts change band; mean score {report.mean_before:.1f} -> {report.mean_after:.1f}")
    if report.changes and limit:
        click.echo("accounts that change band, the largest score change first:")
        for c in report.changes[:limit]:
            click.echo(f"  {printable(c.account_id, 80)}: {c.band_before or 'no score'} {_points(c.score_before)} -> "
                       f"{c.band_after or 'no score'} {_points(c.score_after)}")
        if len(report.changes) > limit:
            click.echo(f"  ... and {len(report.changes) - limit} more (--limit)")
    if report.components:
        click.echo(f"component scores, p{'/p'.join(map(str, PERCENTILES))} before -> after:")
        for name, (was, will) in report.components.items():
            click.echo(f"  {printable(name, 60):<24}{_spread(was):>20} -> {_spread(will)}")


def _points(score: float | None) -> str:
    return "-" if score is None else f"{score:.1f}"


def _spread(values: tuple | None) -> str:
    return "not scored" if values is None else "/".join(f"{v:.0f}" for v in values)


def _load_model(path: Path, setting: str | None = None):
    """The model at `path`, or a clean exit listing every problem with the path of its field: exit 1 for
    a file given as an argument, 2 for the one of a `setting` (HEALTH_MODEL), as for any bad setting."""
    from streams.core import ModelError, load_model

    try:
        return load_model(path)
    except ModelError as err:
        if setting is not None:
            raise Unusable(f"{setting}: {err}") from None
        raise click.ClickException(str(err)) from None


def _quiet_retries() -> None:
    """Keep aiokafka's producer from printing the retries it makes: a topic created a moment ago answers
    NotLeaderForPartition for its first second (a dozen lines at a new user), and the retry succeeds. What
    fails for good still raises, and ends as the command's error."""
    import logging

    logging.getLogger("aiokafka.producer.sender").setLevel(logging.ERROR)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


def main() -> None:
    cli()
