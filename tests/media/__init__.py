"""Tests of the media cores (RTP, G.711, WAV, SDP, latching, anchoring) and the relay."""
