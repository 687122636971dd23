"""The closedloop command line: one thin entry point over the pipeline's packages."""
