"""Interoperability with stock softphones (baresip, linphone) from Debian."""
