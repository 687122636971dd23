"""Outbound delivery: posts outbox messages to webhooks, chat and CRMs (moves data out, as ``sinks`` moves it in)."""
