"""The `health` command line."""
from __future__ import annotations

import sys

import click


@click.group()
def cli() -> None:
    """Real-time customer health engine."""


@cli.command()
@click.option("-l", "--loglevel", default="info", type=click.Choice(["crit", "error", "warn", "info", "debug"]))
@click.option("-L", "--loop", default="uvloop", type=click.Choice(["aio", "uvloop"]),
              help="uvloop (default) costs fewer cycles per event-loop iteration: measurably faster.")
@click.option("--web/--without-web", default=True, help="Serve the read API, health checks and /metrics.")
@click.option("--web-port", type=int, default=None, help="Overrides HEALTH_WEB_PORT.")
def worker(loglevel: str, loop: str, web: bool, web_port: int | None) -> None:
    """Run a worker; settings come from the HEALTH_* environment variables (see README)."""
    from streams.app import create_app

    app = create_app()
    settings = app.health.settings
    argv = ["health worker", "--loglevel", loglevel, "--loop", loop, "worker",
            "--web-bind", settings.web_host, "--web-port", str(web_port or settings.web_port)]
    argv += [] if web else ["--without-web"]
    sys.argv = argv  # faust's own CLI parses sys.argv; it overrides web settings with its flags
    app.main()


def main() -> None:
    cli()
