"""``closedloop deliver``: post outbox messages to the configured destinations until stopped (Ctrl-C or SIGTERM)."""

from __future__ import annotations

import signal
import threading

import click


@click.command("deliver")
@click.option("--group", default=None, help="Kafka consumer group (default closedloop-deliver).")
def command(group: str | None) -> None:
    """Send each {prefix}.outbox message to its destinations (docs/DELIVERY.md); failures to {prefix}.outbox-dead.
    With Meta or LinkedIn configured, also feed their stage conversions to the outbox (docs/ADS.md)."""
    from closedloop.commands._kafka_cli import refuse_unless_kafka_accepts
    from closedloop.commands._logs_cli import setup_logging
    from delivery.process import run
    from delivery.settings import DeliverySettings
    from deploy.settings import SettingsError, read_settings

    setup_logging()
    overrides = {"delivery_consumer_group": group} if group else {}
    try:
        settings = read_settings(DeliverySettings, **overrides)
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
    refuse_unless_kafka_accepts(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"deliver: {settings.topics.outbox} on {settings.kafka_servers}; Ctrl-C stops")
    feed = None
    if settings.ad_stages():  # Meta or LinkedIn configured: conversions -> outbox (docs/ADS.md)
        from delivery import ad_feed

        feed = threading.Thread(target=ad_feed.run, args=(settings, stop), name="ad-feed", daemon=True)
        feed.start()
        click.echo(f"deliver: ad feed from {settings.topics.conversions} for {', '.join(settings.ad_stages())}")
    run(settings, stop)
    if feed is not None:
        stop.set()
        feed.join(30)
    click.echo("deliver stopped")
