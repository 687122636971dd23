"""Patches of other libraries and the private parts of them the project relies on, all in one place.

Nothing else in the project patches a library or reads a private attribute of one (a lint rule checks it). The
table in docs/COMPAT.md gives, for each patch, the fault it fixes or the gain it brings, the library version it was
checked against, the test that proves it, and when it can go.
"""
