"""Stream jobs: the pure core (channels, sessions, identity, lifecycle, attribution) and the Faust worker."""
