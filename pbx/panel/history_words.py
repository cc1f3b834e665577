"""A call's routing trace in words, Japanese and English (pure: values in, sentences out).

The routing core (``pbx/routing/router.py``) and the call core (``pbx/call/core.py``) write each
step of a call into its record's ``trace`` as one English line for operators, such as
``Tue 20:01:00 Asia/Tokyo: number 0312345678 rule 2 (20:00:00-23:59:59) -> 1003`` or
``1003 no answer after 20s -> forward no_answer to 1004``. ``trace_sentences`` reads those lines
back (``_PATTERNS``, one per line the cores write) and says them the way an admin talks:
``20:01:00 on a Tuesday: rule 2 of 0312345678 (20:00:00-23:59:59) rings 1003``. A line no pattern
knows (written by a newer core, or by hand) is shown as it is, so nothing is ever hidden.

``forward_words`` says the record's ``forwarding`` steps (``{"from", "reason", "to"}``) the same
way, for the history list and its CSV.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Lang = Literal["ja", "en"]


@dataclass(frozen=True, slots=True)
class Sentence:
    """One step of the call, said in one language; ``key`` names the kind of step (tests)."""

    key: str
    text: str


# key: (Japanese, English)
_SENTENCES: dict[str, tuple[str, str]] = {
    "inbound": ("{caller} から {number} への着信", "Call from {caller} to {number}"),
    "inbound_unknown": (
        "{caller} から {number} への着信: 当サービスの番号ではありません(404)",
        "Call from {caller} to {number}: not one of our numbers (404)",
    ),
    "dials": ("内線 {ext} が {number} に発信", "Extension {ext} dialled {number}"),
    "dials_self": (
        "内線 {ext} が自分自身に発信したため話中(486)",
        "Extension {ext} dialled itself: busy (486)",
    ),
    "dials_own_number": (
        "内線 {ext} が自社の番号 {number} に発信(着信として処理)",
        "Extension {ext} dialled the tenant's own number {number} (routed as an inbound call)",
    ),
    "dials_009608": (
        "内線 {ext} が 009608 に発信: 009608 は着信設定でのみ使えます(404)",
        "Extension {ext} dialled 009608: it is only an inbound-rule target (404)",
    ),
    "incomplete": ("{number} は番号が不完全です(484)", "{number} is an incomplete number (484)"),
    "not_a_number": ("{target} は電話番号ではありません(404)", "{target} is not a number (404)"),
    "rule": (
        "{when}: {number} の着信設定 ルール{position}({start}〜{end})により {targets} を呼び出し",
        "{when}: rule {position} of {number} ({start}-{end}) rings {targets}",
    ),
    "no_rule": (
        "{when}: {number} に該当する着信設定がないため着信できません(480)",
        "{when}: no rule of {number} is in force, so the call is refused (480)",
    ),
    "ring": ("{ext} を呼び出し(端末 {count} 台)", "{ext} rings ({count} device(s))"),
    "ring_no_answer": (
        "{ext} を呼び出し(端末 {count} 台)、{seconds} 秒応答がなければ {dest} へ転送",
        "{ext} rings ({count} device(s)); unanswered after {seconds} s it goes to {dest}",
    ),
    "forward_no_answer": (
        "{ext} が {seconds} 秒以内に応答しなかったため {dest} へ転送(無応答時転送)",
        "{ext} did not answer in {seconds} s; forwarded to {dest}",
    ),
    "forward_busy": (
        "{ext} が話中のため {dest} へ転送(ビジー時転送)",
        "{ext} was busy; forwarded to {dest}",
    ),
    "forward_offline": (
        "{ext} がオフラインのため {dest} へ転送(オフライン時転送)",
        "{ext} was offline; forwarded to {dest}",
    ),
    "drop_no_answer": (
        "{ext} が {seconds} 秒以内に応答せず、転送先がないため呼び出しを終了",
        "{ext} did not answer in {seconds} s and has no forward: it stops ringing",
    ),
    "drop_busy": (
        "{ext} が話中で、ビジー時の転送先がありません",
        "{ext} was busy and has no busy forward",
    ),
    "drop_offline": (
        "{ext} がオフラインで、オフライン時の転送先がありません",
        "{ext} was offline and has no offline forward",
    ),
    "drop_failed": (
        "{ext} の端末に接続できませんでした({detail})",
        "{ext}'s devices could not be reached ({detail})",
    ),
    "already_ringing": ("{ext} はすでに呼び出し中です", "{ext} is already ringing"),
    "already_tried": (
        "{ext} はこの通話で呼び出し済みです({outcome})",
        "{ext} was already tried in this call ({outcome})",
    ),
    "caller_skipped": (
        "{ext} は発信者のため呼び出しません",
        "{ext} is the caller, so it does not ring",
    ),
    "no_extension": (
        "内線 {ext} は存在しません(404)",
        "Extension {ext} does not exist (404)",
    ),
    "hops": (
        "{target}: 転送回数の上限({hops} 回)に達しました(482)",
        "{target}: the forward limit ({hops} hops) is used up (482)",
    ),
    "fan_out": (
        "{target}: 一度に呼び出せる着信先の上限({count})を超えました(482)",
        "{target}: more than {count} targets at once (482)",
    ),
    "forward_009608": (
        "009608 は転送先に指定できません(404)",
        "009608 cannot be a forward destination (404)",
    ),
    "own_number": (
        "{number} は自社の番号のため、内部で着信として処理",
        "{number} is the tenant's own number: routed inside",
    ),
    "international_barred": (
        "{number}: 国際電話は許可されていません(403)",
        "{number}: international calls are not allowed (403)",
    ),
    "already_called": (
        "{number} にはこの通話ですでに発信しています",
        "{number} was already called in this call",
    ),
    "no_trunk": ("{number}: 外線が設定されていません(503)", "{number}: no trunk is set up (503)"),
    "dial_out": (
        "{number} へ外線発信(通知番号 {shown})",
        "Dialled out to {number}, presenting {shown}",
    ),
    "dial_out_diverted": (
        "{number} へ外線発信(通知番号 {shown}、転送元 {via})",
        "Dialled out to {number}, presenting {shown} (forwarded by {via})",
    ),
    "announcement_playing": (
        "時間外ガイダンスはすでに再生中です",
        "The after-hours announcement is already playing",
    ),
    "announcement": (
        "時間外ガイダンス(009608)を再生",
        "The after-hours announcement (009608) plays",
    ),
    "answered": ("{by} が応答", "{by} answered"),
    "answered_recorded": ("{by} が応答(通話録音あり)", "{by} answered (the call is recorded)"),
    "answered_009608": (
        "時間外ガイダンス(009608)が応答",
        "The after-hours announcement (009608) answered",
    ),
    "others_cancelled": ("他の呼び出しを停止", "The others stop ringing"),
    "fork_failed": ("{target} への発信が失敗({status})", "The call to {target} failed ({status})"),
    "max_ring": (
        "{seconds} 秒以内に誰も応答しなかったため終了(480)",
        "Nobody answered within {seconds} s (480)",
    ),
    "no_target": (
        "呼び出せる着信先がなくなりました({status})",
        "No target was left to ring ({status})",
    ),
    "bad_offer": ("発信側の SDP を読めませんでした", "The caller's SDP could not be read"),
    "no_codec": (
        "発信側の音声が PCMU/PCMA ではないため接続できません(488)",
        "The caller offered no PCMU/PCMA audio (488)",
    ),
    "no_media_ports": (
        "音声のポートを確保できませんでした(503)",
        "No media ports were free (503)",
    ),
    "announcement_no_media": (
        "音声がないため時間外ガイダンスを再生できません",
        "Without audio the announcement cannot play",
    ),
    "played": ("{by} の再生が終わり切断", "{by} finished playing and hung up"),
    "no_ack": ("ACK が届かないため切断", "No ACK arrived: both sides hung up"),
    "hung_up_ringing": ("呼び出し中に発信者が切断", "The caller hung up while it rang"),
    "hung_up": ("{who} が切断", "{who} hung up"),
    "silence": (
        "{who} の音声が {seconds} 秒届かないため切断",
        "No audio from {who} for {seconds} s: hung up",
    ),
    "cancelled": ("発信者が呼び出し中にキャンセル", "The caller cancelled while it rang"),
    "shutdown": ("サーバーの停止により終了", "Ended by a server shutdown"),
    "raw": ("{line}", "{line}"),
    # issue #18: how each leg of an answered call was protected (pbx.call.encryption)
    "encryption": (
        "暗号化: 発信者 {caller}、着信者 {callee}",
        "Encryption: caller {caller}; callee {callee}",
    ),
}
# One leg's protection: signalling, media, and the verdict (issue #18).
_LEG_VERDICT = {
    (True, True): ("暗号化", "encrypted"),
    (False, False): ("暗号化なし", "not encrypted"),
    (True, False): ("一部のみ暗号化", "partly encrypted"),
    (False, True): ("一部のみ暗号化", "partly encrypted"),
}
_DAYS = {
    "Mon": ("月曜日", "a Monday"),
    "Tue": ("火曜日", "a Tuesday"),
    "Wed": ("水曜日", "a Wednesday"),
    "Thu": ("木曜日", "a Thursday"),
    "Fri": ("金曜日", "a Friday"),
    "Sat": ("土曜日", "a Saturday"),
    "Sun": ("日曜日", "a Sunday"),
}
_OUTCOMES = {
    "busy": ("話中", "busy"),
    "offline": ("オフライン", "offline"),
    "no answer": ("無応答", "no answer"),
    "failed": ("接続失敗", "failed"),
}
_PARTIES = {"caller": ("発信者", "the caller"), "callee": ("着信者", "the callee")}
_REASONS = {
    "no-answer": ("無応答時転送", "no answer"),
    "user-busy": ("ビジー時転送", "busy"),
    "unavailable": ("オフライン時転送", "offline"),
    "unconditional": ("着信設定", "inbound rule"),
}

_WHEN = (
    r"(?P<day>Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?P<time>\d\d:\d\d:\d\d) (?P<zone>\S+)"
    r"(?: \(holiday: (?P<holiday>[^)]*)\))?"
)
_NUM = r"[^\s:]+"


@dataclass(frozen=True, slots=True)
class _Pattern:
    key: str
    regex: re.Pattern[str]
    # Picks the sentence key from the match (when one line has variants), else ``key``.
    pick: Callable[[re.Match[str]], str] | None = None


def _p(key: str, regex: str, pick: Callable[[re.Match[str]], str] | None = None) -> _Pattern:
    return _Pattern(key, re.compile(regex), pick)


def _forward_key(match: re.Match[str]) -> str:
    return "forward_" + match.group("kind")


def _drop_key(match: re.Match[str]) -> str:
    return "drop_" + match.group("outcome").replace(" ", "_")


def _ring_key(match: re.Match[str]) -> str:
    return "ring_no_answer" if match.group("dest") else "ring"


def _answered_key(match: re.Match[str]) -> str:
    if match.group("by") == "009608":
        return "answered_009608"
    return "answered_recorded" if match.group("recording") else "answered"


def _dial_out_key(match: re.Match[str]) -> str:
    return "dial_out_diverted" if match.group("via") else "dial_out"


# One entry per line the cores write (router.py, then core.py), tried in order.
_PATTERNS: tuple[_Pattern, ...] = (
    _p(
        "inbound_unknown",
        rf"call from (?P<caller>{_NUM}) via \S+ to (?P<number>{_NUM}): not our number",
    ),
    _p("inbound", rf"call from (?P<caller>{_NUM}) via \S+ to (?P<number>{_NUM}) \(tenant [^)]*\)"),
    _p("dials_self", rf"(?P<ext>\d+) dials (?P<number>{_NUM}): itself -> 486"),
    _p(
        "dials_own_number",
        rf"(?P<ext>\d+) dials (?P<number>{_NUM}): "
        r"the tenant's own number, routed as an inbound call",
    ),
    _p(
        "dials_009608",
        rf"(?P<ext>\d+) dials (?P<number>{_NUM}): "
        r"009608 is only an inbound-rule target -> 404",
    ),
    _p("incomplete", rf"(?:\d+ dials )?(?P<number>{_NUM}): incomplete number -> 484"),
    _p("not_a_number", r"(?:\d+ dials )?(?P<target>.+?): not a number -> 404"),
    _p("dials", rf"(?P<ext>\d+) dials (?P<number>{_NUM})(?: \(tenant [^)]*\))?"),
    _p(
        "rule",
        rf"{_WHEN}: number (?P<number>{_NUM}) rule (?P<position>\d+) "
        r"\((?P<start>[\d:]+)-(?P<end>[\d:]+)\) -> (?P<targets>\S+)",
    ),
    _p("no_rule", rf"{_WHEN}: number (?P<number>{_NUM}) no rule in force -> 480"),
    _p("hops", r"(?P<target>\S+): forward hop budget \((?P<hops>\d+)\) used up -> 482"),
    _p("fan_out", r"(?P<target>\S+): over (?P<count>\d+) targets at once -> 482"),
    _p("no_extension", r"(?P<ext>\d+): no such extension -> 404"),
    _p("caller_skipped", r"(?P<ext>\d+) is the caller: skipped"),
    _p("already_ringing", r"(?P<ext>\d+) is already ringing"),
    _p("already_tried", r"(?P<ext>\d+) already tried in this call \((?P<outcome>[a-z ]+)\)"),
    _p(
        "forward_no_answer",
        r"(?P<ext>\d+) no answer after (?P<seconds>\d+)s "
        r"-> forward (?P<kind>no_answer) to (?P<dest>\S+)",
        _forward_key,
    ),
    _p(
        "forward",
        r"(?P<ext>\d+) (?:busy|offline|no answer)(?: \([^)]*\))? "
        r"-> forward (?P<kind>busy|offline|no_answer) to (?P<dest>\S+)",
        _forward_key,
    ),
    _p(
        "drop",
        r"(?P<ext>\d+) (?P<outcome>busy|offline|no answer|failed)"
        r"(?: after (?P<seconds>\d+)s)?(?: \((?P<detail>[^)]*)\))?"
        r", no forward -> dropped \((?P<status>\d+)\)",
        _drop_key,
    ),
    _p(
        "ring",
        r"ring (?P<ext>\d+) \((?P<count>\d+) contacts?\)"
        r"(?:, no answer after (?P<seconds>\d+)s -> (?P<dest>\S+))?",
        _ring_key,
    ),
    _p("forward_009608", r"009608 is only an inbound-rule target, not a forward -> 404"),
    _p("own_number", rf"(?P<number>{_NUM}) is the tenant's own number: routed inside"),
    _p(
        "international_barred",
        rf"(?P<number>{_NUM}): international calls are off for \S+ -> 403",
    ),
    _p("already_called", rf"(?P<number>{_NUM}) was already called in this call: dropped"),
    _p("no_trunk", rf"(?P<number>{_NUM}): no trunk configured -> 503"),
    _p(
        "dial_out",
        rf"dial out (?P<number>{_NUM}) via \S+ presenting (?P<shown>\S+?)"
        r"(?:, diversion (?P<via>\S+) \([^)]*\))?",
        _dial_out_key,
    ),
    _p("announcement_playing", r"009608: the announcement is already playing"),
    _p("announcement", r"009608: play the after-hours announcement"),
    _p("announcement_no_media", r"009608: no media to play the announcement"),
    _p(
        "answered",
        r"(?P<by>\S+)(?: \((?P<contact>[^)]*)\))? answered"
        r"(?P<recording>, recording)?(?P<others>, cancel the others)?",
        _answered_key,
    ),
    _p("fork_failed", r"(?P<target>\S+) failed \((?P<status>\d+)\)"),
    _p("max_ring", r"nobody answered within (?P<seconds>\d+)s -> 480"),
    _p("no_target", r"no target left to ring \([^)]*\) -> (?P<status>\d+)"),
    _p("bad_offer", r"unreadable SDP offer: .*"),
    _p("no_codec", r"no PCMU/PCMA audio in the offer -> 488"),
    _p("no_media_ports", r"no media ports: .* -> 503"),
    _p("played", r"(?P<by>\S+) played \(\d+ packets\): hang up"),
    _p("no_ack", r"no ACK for .*: hang up both legs"),
    _p("hung_up_ringing", r"the caller hung up while ringing"),
    _p("hung_up", r"(?P<who>\S+) hung up"),
    _p("silence", r"no RTP from the (?P<who>caller|callee) for (?P<seconds>\d+)s: hang up"),
    _p("cancelled", r"the caller cancelled"),
    _p("shutdown", r"ended by server shutdown"),
    _p(
        "encryption",
        r"encryption: caller (?P<caller_sig>TLS|clear) signalling, (?P<caller_media>SRTP|RTP) "
        r"media; callee (?P<callee_sig>TLS|clear) signalling, (?P<callee_media>SRTP|RTP) media",
    ),
)


def trace_sentences(trace: Sequence[object], lang: Lang) -> list[Sentence]:
    """The record's trace lines as sentences in ``lang``, one or two per line, in order."""
    out: list[Sentence] = []
    for item in trace:
        line = str(item)
        out.extend(_line_sentences(line, lang))
    return out


def _line_sentences(line: str, lang: Lang) -> list[Sentence]:
    for pattern in _PATTERNS:
        match = pattern.regex.fullmatch(line)
        if match is None:
            continue
        key = pattern.pick(match) if pattern.pick is not None else pattern.key
        params = {name: value for name, value in match.groupdict().items() if value is not None}
        params = _localise(params, lang)
        sentences = [Sentence(key, _say(key, lang, params))]
        if key.startswith("answered") and match.group("others"):
            sentences.append(Sentence("others_cancelled", _say("others_cancelled", lang, {})))
        return sentences
    return [Sentence("raw", line)]


def _localise(params: dict[str, str], lang: Lang) -> dict[str, str]:
    index = 0 if lang == "ja" else 1
    out = dict(params)
    if "day" in params:
        clock = params["time"]
        day = _DAYS[params["day"]][index]
        when = f"{day} {clock}" if lang == "ja" else f"{clock} on {day}"
        holiday = params.get("holiday")
        if holiday:
            when += f"(祝日: {holiday})" if lang == "ja" else f" (holiday: {holiday})"
        out["when"] = when
    if "outcome" in params and params["outcome"] in _OUTCOMES:
        out["outcome"] = _OUTCOMES[params["outcome"]][index]
    if "who" in params and params["who"] in _PARTIES:
        out["who"] = _PARTIES[params["who"]][index]
    if "targets" in params:
        out["targets"] = ("、" if lang == "ja" else ", ").join(params["targets"].split(","))
    for party in ("caller", "callee"):
        if f"{party}_sig" in params:
            out[party] = _leg_words(params[f"{party}_sig"], params[f"{party}_media"], index)
    out.setdefault("seconds", "?")
    out.setdefault("detail", "")
    return out


def _leg_words(signalling: str, media: str, index: int) -> str:
    tls, srtp = signalling == "TLS", media == "SRTP"
    verdict = _LEG_VERDICT[(tls, srtp)][index]
    if index == 0:
        return f"信号 {'TLS' if tls else '平文'}・音声 {media}({verdict})"
    return f"{'TLS' if tls else 'clear'} signalling, {media} media ({verdict})"


def _say(key: str, lang: Lang, params: Mapping[str, str]) -> str:
    text = _SENTENCES[key][0 if lang == "ja" else 1]
    return text.format(**params)


def forward_words(forwarding: Sequence[object], lang: Lang) -> list[str]:
    """The record's forwarding steps, as ``1002 → 09012345678 (no answer)``."""
    index = 0 if lang == "ja" else 1
    out: list[str] = []
    for step in forwarding:
        if not isinstance(step, dict):
            out.append(str(step))
            continue
        source = str(step.get("from", "?"))
        target = str(step.get("to", "?"))
        reason = str(step.get("reason", ""))
        label = _REASONS.get(reason, (reason, reason))[index]
        out.append(f"{source} → {target}" + (f" ({label})" if label else ""))
    return out


def sentence_keys() -> frozenset[str]:
    """Every sentence this module can say (a test checks both languages have each)."""
    return frozenset(_SENTENCES)


def sentence_pairs() -> Mapping[str, tuple[str, str]]:
    return dict(_SENTENCES)
