"""Layer 2: ARP / NDP packet codecs (pure) and the raw-socket responder (I/O)."""
