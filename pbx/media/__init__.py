"""Media: SDP offer/answer, the RTP relay, call recording and prompt playback.

Pure cores (no asyncio, sockets or clock): ``rtp`` (RFC 3550 packets), ``g711`` (PCMU/PCMA),
``wav`` (PCM WAV headers), ``sdp`` (RFC 4566 parsing, RFC 3264 rewriting). Adapters (asyncio):
``relay`` (``PortPool``, ``MediaSession``), ``recorder`` (``CallRecorder``), ``player``
(``PromptPlayer``).

How the call engine uses them (one ``PortPool`` per process, from ``[media] rtp_ports``)::

    pool = PortPool.from_spec(cfg.media.rtp_ports)            # or PortPool(min, max)

    # INVITE from the caller (leg A) with an SDP offer:
    offer = parse_sdp(invite.body)                            # RemoteProtocolError -> 400
    a = audio_stream(offer)
    if a is None or not a.active:                             # no PCMU/PCMA audio stream
        ...                                                   # answer 488
    media = await MediaSession.open(
        pool, bind_host, inactivity_seconds=cfg.media.inactivity_seconds,
        on_inactive=lambda side: engine.hang_up(call, "rtp_timeout"))
    media.apply_sdp(Side.A, a)          # = set_remote(Side.A, a.address, a.port, a.direction)
    origin_b = make_origin(random_id, advertise)
    body_to_b = build_sdp(rewrite_sdp(offer, address=advertise, port=media.b.port, origin=origin_b))

    # 200 OK from the callee (leg B) with the answer:
    answer = parse_sdp(ok.body)
    b = audio_stream(answer)                                  # None: callee refused audio
    media.apply_sdp(Side.B, b)
    body_to_a = build_sdp(rewrite_sdp(answer, address=advertise, port=media.a.port,
                                      origin=origin_a, offer=offer))
    if recording:
        recorder = await CallRecorder.start(recordings_dir, f"{call_id}.wav", media)

    # re-INVITE (hold/resume): parse, apply_sdp again (resets latching), rewrite with
    # origin.next_version(). BYE, CANCEL or failure: ``await recorder.close()``, ``media.close()``
    # (always, in a finally).

    # 009608, the after-hours announcement: the PBX answers itself on a one-legged session.
    prompt = read_wav(Path("prompts/009608.wav"), expect=TELEPHONE_MONO)   # once, at start-up
    media = await MediaSession.open(pool, bind_host, sides=(Side.A,))
    answer = answer_sdp(offer, address=advertise, port=media.a.port, origin=origin_a)
    media.apply_sdp(Side.A, a)
    player = PromptPlayer.from_wav(prompt, audio_stream(answer).codec, media.a.send_rtp)
    await player.start()                                       # then send BYE, media.close()
"""
