"""What starts the pieces: the single-machine stack (embedded Kafka broker, embedded ClickHouse endpoint, PID files)."""
