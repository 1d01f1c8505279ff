"""Speaker-to-speaker liveness: SWIM-style protocol core (pure) and UDP transport."""
