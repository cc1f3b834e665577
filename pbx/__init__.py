"""pbx: a SIP PBX and back-to-back user agent, the call-routing engine of a cloud PBX."""

__version__ = "0.1.0"
