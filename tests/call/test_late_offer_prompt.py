"""A late offer (INVITE without SDP) answered by the 009608 announcement (issue 16): we offer in
the 200 (PCMU, PCMA, telephone-event, on the relay's A port), the caller's ACK answers, and the
prompt plays with the codec it chose. Pure core, fake time."""

from __future__ import annotations

from pbx.call.core import PlayPrompt, SetRemote
from pbx.media.g711 import Codec
from pbx.media.latch import Side
from pbx.media.sdp import audio_stream, parse_sdp
from tests.call.bench import CallBench, invite, sdp, sent
from tests.call.test_core import SNAPSHOT
from tests.routing.builders import NUMBER, from_trunk

AFTER_HOURS = "2026-11-27 21:00:00"  # the number's rules play 009608


def _late() -> CallBench:
    return CallBench(SNAPSHOT, invite(NUMBER), from_trunk(), at=AFTER_HOURS)


def test_our_offer_is_in_the_200_and_the_prompt_waits_for_the_ack() -> None:
    b = _late()
    out = b.start()
    assert b.to_caller(out) == [200]
    assert not any(isinstance(a, PlayPrompt) for a in out)
    offer = audio_stream(parse_sdp(b.final_to_caller().body))
    assert offer is not None
    assert (offer.address, offer.port) == ("203.0.113.1", 20000)  # the relay's A port
    assert offer.codecs == (Codec.PCMU, Codec.PCMA)
    assert offer.telephone_event == 101
    assert b.final_to_caller().header("Content-Type") == "application/sdp"
    assert b.core.answered_by == "009608"


def test_the_acks_answer_picks_the_codec_and_the_prompt_plays() -> None:
    b = _late()
    b.start()
    answer = (
        sdp("192.0.2.1", 4300)
        .replace(b"RTP/AVP 0 101", b"RTP/AVP 8 101")
        .replace(b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:8 PCMA/8000")
    )
    out = b.caller_ack(body=answer)
    (play,) = [a for a in out if isinstance(a, PlayPrompt)]
    assert (play.prompt, play.codec) == ("009608", Codec.PCMA)
    (remote,) = [a for a in out if isinstance(a, SetRemote)]
    assert remote.side is Side.A
    assert (remote.stream.address, remote.stream.port) == ("192.0.2.1", 4300)
    assert out.index(remote) < out.index(play)  # the relay knows where to send first
    assert b.caller_ack(body=answer) == []  # a repeated ACK plays nothing more


def test_an_ack_without_a_usable_answer_hangs_up() -> None:
    b = _late()
    b.start()
    out = b.caller_ack()
    assert not any(isinstance(a, PlayPrompt) for a in out)
    assert len(sent(out, "BYE")) == 1
    assert b.core.record().trace[-1] == (
        "no usable answer in the caller's ACK to our offer: hang up"
    )
