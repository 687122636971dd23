"""One module per CLI verb. Each module defines ``command``, a click command named after the file."""
