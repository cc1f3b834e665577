"""Media: SDP offer/answer, RTP latching, the relay, call recording and prompt playback.

Pure cores (no asyncio, sockets or clock): ``rtp`` (RFC 3550 packets), ``g711`` (PCMU/PCMA),
``wav`` (PCM WAV headers), ``sdp`` (RFC 4566 parsing, RFC 3264 rewriting), ``latch`` (symmetric
RTP latching and RTP loss counting, ``now`` passed in), ``anchor`` (a call's SDP re-anchored on
the relay: every offer and answer that crosses the B2BUA). Adapters (asyncio): ``relay``
(``PortPool``, ``MediaSession``: the sockets), ``recorder`` (``CallRecorder``), ``player``
(``PromptPlayer``), ``calls`` (``CallMedia``: every call's session, recorder and player, by
call id, for the call engine).

How a call uses them (the call core decides, ``pbx.b2bua`` carries it out through ``CallMedia``)::

    anchor = MediaAnchor(parse_sdp(invite.body), host, a_port, b_port, session_id)
    body_to_b = anchor.offer_to_callee()                 # every fork leg's INVITE
    anchored = anchor.answer_to_caller(ok.body)           # None: unreadable answer
    media.set_remote(Side.B, ...anchored.remote.stream)   # the relay learns where B is
    # re-INVITE / UPDATE: anchor.offer_across(side, body), then answer_across(side, body)
    # 009608: anchor.answer_ourselves() -> our SDP and codec; PromptPlayer plays the prompt
"""
