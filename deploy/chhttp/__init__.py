"""Pieces of the embedded ClickHouse HTTP endpoint: SQL text scanning, body codecs, chDB sessions."""
