"""Integration tests: the real server as a subprocess on loopback, driven by SIPp and pyVoIP."""
