"""The call record's encryption line (issue #18), as the call core writes it, said in ja/en."""

from __future__ import annotations

import pytest

from pbx.call.encryption import encryption_note
from pbx.panel.history_words import trace_sentences


@pytest.mark.parametrize(
    ("legs", "ja", "en"),
    [
        (
            (True, True, True, True),
            "暗号化: 発信者 信号 TLS・音声 SRTP(暗号化)、着信者 信号 TLS・音声 SRTP(暗号化)",
            "Encryption: caller TLS signalling, SRTP media (encrypted); "
            "callee TLS signalling, SRTP media (encrypted)",
        ),
        (  # a phone on TLS + SRTP calling out through the plain carrier trunk
            (True, True, False, False),
            "暗号化: 発信者 信号 TLS・音声 SRTP(暗号化)、着信者 信号 平文・音声 RTP(暗号化なし)",
            "Encryption: caller TLS signalling, SRTP media (encrypted); "
            "callee clear signalling, RTP media (not encrypted)",
        ),
        (
            (True, False, False, True),
            "暗号化: 発信者 信号 TLS・音声 RTP(一部のみ暗号化)、"
            "着信者 信号 平文・音声 SRTP(一部のみ暗号化)",
            "Encryption: caller TLS signalling, RTP media (partly encrypted); "
            "callee clear signalling, SRTP media (partly encrypted)",
        ),
    ],
)
def test_the_encryption_line_is_said_in_both_languages(
    legs: tuple[bool, bool, bool, bool], ja: str, en: str
) -> None:
    line = encryption_note(*legs)
    [said_ja] = trace_sentences([line], "ja")
    [said_en] = trace_sentences([line], "en")
    assert said_ja.key == said_en.key == "encryption"
    assert said_ja.text == ja
    assert said_en.text == en
