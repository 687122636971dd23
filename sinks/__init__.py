"""ClickHouse side of closedloop: schema migrations, the Kafka -> ClickHouse sink writer and the report SQL."""
