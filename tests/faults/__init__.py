"""The fault suite: processes killed with SIGKILL under load, and what the pipeline guarantees afterwards
(docs/RELIABILITY.md lists each fault, the guarantee and its test). Every test here is marked ``faults``."""
