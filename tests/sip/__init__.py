"""Tests of the SIP cores, with the RFC 4475 torture messages byte-exact in data/."""
