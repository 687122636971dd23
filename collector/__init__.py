"""The collector: HTTP (browser events, CRM webhooks) and CSV imports -> Kafka source topics, with an on-disk spool.

``collector.app.create_app(settings)`` builds the ASGI app; ``closedloop collector`` serves it. Which module
decides and which moves data: docs/COLLECTOR.md, "How the code is laid out".
"""
