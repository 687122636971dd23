"""The stream jobs' rules: channels, sessions, visitors, identity, contacts, lifecycle and attribution.

Pure functions over pydantic models: no Faust, no Kafka, no I/O (the channel rules file is read once, at start).
The runtime (``stream_jobs.runtime``) calls them from its agents.
"""
