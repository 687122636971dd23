"""The Faust worker: the app, its agents and tables, the output topics, counters, dead letters and diagnostics.

It moves records between Kafka and the rules of ``stream_jobs.rules``, which decide.
"""
