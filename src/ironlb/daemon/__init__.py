"""What every long-running ironlb process shares: its lifecycle (startup -> run -> shutdown)."""
