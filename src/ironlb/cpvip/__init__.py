"""Control-plane VIP."""
