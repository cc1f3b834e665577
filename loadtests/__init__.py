"""Load runs and micro-benchmarks: their own command (README), not part of the unit suite."""
