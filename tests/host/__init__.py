"""Real-tool tests of the host configuration (marker: host)."""
