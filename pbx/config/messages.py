"""What each configuration problem says, in English and in Japanese (the control panel's words).

Every problem the loader reports has a stable code (``CATALOG``'s keys) and string parameters.
The English template with the parameters is the problem's ``message``: the rules call
``english`` to make it, so the English text here is the one ``pbx check-config`` prints. The
Japanese wording follows the customer control-panel manual (内線ユーザー, 発信時通知番号, 転送設定
ビジー時/無応答時/オフライン時, 着信設定, ...), which the panel's own labels use too.

A parameter holds a value as the admin wrote it or as the English text shows it. Where the
value is itself words (a TOML type, a list of days, a forwarding cycle, the TOML parser's
reason), the message names its kind and the Japanese rendering translates it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from pbx.config.problems import ConfigProblem

Lang = Literal["ja", "en"]
LANGS: tuple[Lang, ...] = ("ja", "en")

# How a parameter's value is put into Japanese (English shows every value as it is).
ParamKind = Literal["term", "days", "gaps", "steps", "entity", "toml"]


@dataclass(frozen=True, slots=True)
class Message:
    """One problem's text: ``str.format`` templates over its parameters, per language."""

    en: str
    ja: str
    kinds: tuple[tuple[str, ParamKind], ...] = ()  # parameters whose values are words


def _m(en: str, ja: str, **kinds: ParamKind) -> Message:
    return Message(en, ja, tuple(kinds.items()))


_NOT_TYPE_JA = "({actual} {shown} になっています)"

CATALOG: Mapping[str, Message] = MappingProxyType(
    {
        # -- files --------------------------------------------------------------------------
        "file.unreadable": _m(
            "cannot read the file: {reason}", "ファイルを読み込めません: {reason}", reason="term"
        ),
        "file.not_utf8": _m(
            "is not UTF-8 text (byte {byte})",
            "UTF-8 のテキストではありません(先頭から{byte}バイトの位置)",
        ),
        "file.invalid_toml": _m(
            "invalid TOML: {detail}", "TOML の書き方に誤りがあります: {detail}", detail="toml"
        ),
        "file.invalid_toml_quote": _m(
            "invalid TOML: {detail}; line {line} {text}: write the value in quotes: {suggestion}",
            "TOML の書き方に誤りがあります: {detail}。{line}行目 {text}: "
            '値を引用符 " で囲んでください: {suggestion}',
            detail="toml",
        ),
        "file.missing": _m(
            '"{value}": there is no file at {path}', "「{value}」のファイルがありません({path})"
        ),
        "tenants_dir.not_directory": _m(
            '"{path}" is not a directory', "「{path}」はフォルダーではありません"
        ),
        "tenants_dir.empty": _m(
            "no tenant files (*.toml) in {path}",
            "{path} にテナントの設定ファイル(*.toml)がありません",
        ),
        # -- keys and types -----------------------------------------------------------------
        "key.unknown": _m(
            "unknown key; known keys: {known}",
            "この項目名は使えません。使える項目名: {known}",
        ),
        "key.unknown_suggest": _m(
            'unknown key (did you mean "{suggestion}"?); known keys: {known}',
            "この項目名は使えません(「{suggestion}」の書き間違いではありませんか?)。"
            "使える項目名: {known}",
        ),
        "type.wrong": _m(
            "must be {expected}, not {actual} {shown}",
            "{expected}で指定してください" + _NOT_TYPE_JA,
            expected="term",
            actual="term",
        ),
        "type.not_table": _m(
            "must be a table ([{name}]), not {actual} {shown}",
            "テーブル [{name}] として書いてください" + _NOT_TYPE_JA,
            actual="term",
        ),
        "type.not_array_of_tables": _m(
            "must be an array of tables ([[{name}]]), not {actual} {shown}",
            "テーブルの配列 [[{name}]] として書いてください" + _NOT_TYPE_JA,
            actual="term",
        ),
        "type.entry_not_table": _m(
            "must be a table, not {actual} {shown}",
            "テーブルとして書いてください" + _NOT_TYPE_JA,
            actual="term",
        ),
        "value.required": _m("is required", "必須です。入力してください"),
        "value.empty": _m("must not be empty", "空にはできません"),
        "value.too_small": _m(
            "must be at least {minimum}, not {value}",
            "{minimum} 以上にしてください({value} になっています)",
        ),
        "value.out_of_range": _m(
            "must be {minimum}-{maximum}, not {value}",
            "{minimum}〜{maximum} の範囲にしてください({value} になっています)",
        ),
        "value.full_width": _m(
            'full-width characters normalised: "{value}" -> "{folded}"',
            "全角文字を半角に直して読みました: 「{value}」→「{folded}」",
        ),
        # -- addresses (host:port) ----------------------------------------------------------
        "address.bracket_unclosed": _m(
            "\"{value}\": missing ']' after the IPv6 address",
            "「{value}」: IPv6 アドレスの後ろに ] がありません",
        ),
        "address.port_after_bracket": _m(
            "\"{value}\": expected ':' and a port after ']'",
            "「{value}」: ] の後ろには : とポート番号を書いてください",
        ),
        "address.ipv6_needs_brackets": _m(
            '"{value}": write an IPv6 address in brackets, e.g. [::1]:5060',
            "「{value}」: IPv6 アドレスは [::1]:5060 のように [ ] で囲んでください",
        ),
        "address.not_ip": _m(
            '"{value}": "{host}" is not an IP address',
            "「{value}」: 「{host}」は IP アドレスではありません",
        ),
        "address.port_required": _m(
            '"{value}": a port is required (host:port)',
            "「{value}」: ポート番号が必要です(アドレス:ポート)",
        ),
        "address.bad_port": _m(
            '"{value}": "{port}" is not a port number ({lowest}-65535)',
            "「{value}」: 「{port}」はポート番号ではありません({lowest}〜65535)",
        ),
        # -- pbx.toml -----------------------------------------------------------------------
        "sip.below_rfc_minimum": _m(  # issue 16
            "must be at least 90 (RFC 4028), not {value}; below 90 only for tests and labs,"
            " with [sip] allow_below_rfc_minimum = true",
            "90 以上にしてください(RFC 4028、{value} になっています)。90 未満はテスト・検証用で、"
            "[sip] allow_below_rfc_minimum = true が必要です",
        ),
        "sip.session_expires_below_min_se": _m(  # issue 16
            "must be at least [sip] min_se ({min_se}), not {value}",
            "[sip] min_se({min_se})以上にしてください({value} になっています)",
        ),
        "sip.listen_empty": _m(
            'needs at least one address, e.g. "udp:0.0.0.0:5060"',
            '待ち受けアドレスを1つ以上指定してください(例: "udp:0.0.0.0:5060")',
        ),
        "sip.listen_transport": _m(
            '"{value}" must be "udp:HOST:PORT", "tcp:HOST:PORT" or "tls:HOST:PORT" '
            '(e.g. "udp:0.0.0.0:5060", "tcp:[::]:5060", "tls:0.0.0.0:5061")',
            "「{value}」は「udp:アドレス:ポート」「tcp:アドレス:ポート」「tls:アドレス:ポート」"
            'のいずれかの形で書いてください(例: "udp:0.0.0.0:5060"、"tls:0.0.0.0:5061")',
        ),
        # issue #18 (SIP over TLS)
        "sip.tls_needs_certificate": _m(
            'a "tls:" entry needs [sip] tls_certificate and tls_key (PEM files)',
            "「tls:」の待ち受けには [sip] tls_certificate と tls_key(PEM ファイル)が必要です",
        ),
        "sip.listen_duplicate": _m('"{value}" is listed twice', "「{value}」が2回書かれています"),
        "sip.advertise_invalid": _m(
            '"{value}" is not an IP address or host name',
            "「{value}」は IP アドレスでもホスト名でもありません",
        ),
        # issue #20 (edge, rtpengine)
        "sip.edge_invalid": _m(
            '"{value}" is not an IP address (the edge\'s address, e.g. "127.0.0.1")',
            '「{value}」は IP アドレスではありません(エッジのアドレス。例: "127.0.0.1")',
        ),
        "media.engine_unknown": _m(
            '"{value}" is not one of "builtin", "rtpengine"',
            '「{value}」は使えません。"builtin" か "rtpengine" を指定してください',
        ),
        "media.kernel_forwarding_rtpengine": _m(
            'applies to the built-in relay only: with engine = "rtpengine" it does nothing '
            "(rtpengine forwards in the kernel itself when its module is loaded)",
            'engine = "rtpengine" では使われません(内蔵リレー専用の設定です。rtpengine は'
            "カーネルモジュールがあればそれ自身でカーネル転送します)",
        ),
        "media.rtpengine_format": _m(
            '"{value}" must be "udp:HOST:PORT" (e.g. "udp:127.0.0.1:2223")',
            '「{value}」は「udp:アドレス:ポート」の形で書いてください(例: "udp:127.0.0.1:2223")',
        ),
        "auth.algorithm_unknown": _m(
            '"{value}" is not one of "MD5", "SHA-256"',
            '「{value}」は使えません。"MD5" か "SHA-256" を指定してください',
        ),
        "auth.algorithm_duplicate": _m(
            '"{value}" is listed twice', "「{value}」が2回書かれています"
        ),
        "auth.algorithms_empty": _m(
            'needs at least one algorithm ("MD5", "SHA-256")',
            'アルゴリズムを1つ以上指定してください("MD5"、"SHA-256")',
        ),
        "registrar.min_above_max": _m(
            "{min_expires} is more than max_expires ({max_expires})",
            "{min_expires} が max_expires({max_expires})より大きくなっています",
        ),
        "registrar.default_outside": _m(
            "{default_expires} is outside min_expires-max_expires ({min_expires}-{max_expires})",
            "{default_expires} が min_expires〜max_expires"
            "({min_expires}〜{max_expires})の範囲外です",
        ),
        "calls.no_answer_not_below_max_ring": _m(
            "{no_answer} is not less than max_ring_seconds ({max_ring}): "
            "no-answer forwarding can never happen",
            "{no_answer} が max_ring_seconds({max_ring})より短くないため、"
            "転送設定(無応答時)が働くことはありません",
        ),
        "media.rtp_ports_format": _m(
            '"{value}" must be a range "LOW-HIGH", e.g. "20000-29999"',
            '「{value}」は「下限-上限」の範囲で書いてください(例: "20000-29999")',
        ),
        "media.rtp_ports_range": _m(
            '"{value}" must satisfy 1024 <= LOW < HIGH <= 65535',
            "「{value}」は 1024 ≦ 下限 < 上限 ≦ 65535 にしてください",
        ),
        "admin.listen_public": _m(
            '"{value}" is not a loopback address: anyone who can reach it can reload the server',
            "「{value}」はループバックアドレスではありません。"
            "このアドレスに届く人は誰でもサーバーの設定を再読み込みできます",
        ),
        # -- [storage] database (issue #20: the shared PostgreSQL store) ---------------------
        "storage.database_scheme": _m(
            '"{value}" is not a PostgreSQL URL: write postgresql://USER@HOST:PORT/DATABASE'
            " (or leave database out to keep SQLite in data_dir)",
            "「{value}」は PostgreSQL の URL ではありません。postgresql://ユーザー@ホスト:ポート/"
            "データベース名 の形で書いてください(SQLite を data_dir で使い続ける場合は"
            " database を書かないでください)",
        ),
        "storage.database_name": _m(
            '"{value}" names no database: end the URL with /DATABASE',
            "「{value}」にデータベース名がありません。"
            "URL の最後に /データベース名 を付けてください",
        ),
        "storage.database_password": _m(
            "holds a password: anyone who can read pbx.toml can read it; prefer ~/.pgpass or"
            " PGPASSWORD in the service's environment",
            "パスワードが書かれています。pbx.toml を読める人には見えてしまいます。"
            "~/.pgpass またはサービスの環境変数 PGPASSWORD を使ってください",
        ),
        # -- [storage] node (issue #20: crash recovery per node) -------------------
        "storage.node_name": _m(
            '"{value}" is not a node name: use 1-64 letters, digits, ".", "_", "-" or ":"'
            " (leave node out for a name generated once and kept in data_dir)",
            "「{value}」はノード名として使えません。英数字と「.」「_」「-」「:」で 1〜64 文字に"
            "してください(node を書かなければ、自動で作った名前を data_dir に保存して使います)",
        ),
        "panel.listen_same_as_admin": _m(
            '"{value}" is also the address of [admin] listen: the panel needs a port of its own',
            "「{value}」は [admin] listen と同じアドレスです。"
            "コントロールパネルには別のポートを指定してください",
        ),
        "panel.tls_pair": _m(
            "is required when {other} is set (give both or neither)",
            "{other} を指定する場合は必須です(両方を指定するか、どちらも指定しないでください)",
        ),
        "panel.listen_public_without_tls": _m(
            '"{value}" is not a loopback address and [panel] has no TLS: '
            "passwords and sessions would cross the network in clear text",
            "「{value}」はループバックアドレスではなく、[panel] に TLS の設定もありません。"
            "パスワードやセッションが暗号化されずにネットワークを流れます",
        ),
        "panel.idle_not_below_max": _m(
            "{idle} minutes is not less than session_max_hours ({max_minutes} minutes): "
            "sessions never end for being idle",
            "{idle}分が session_max_hours({max_minutes}分)より短くないため、"
            "操作がなくてもセッションは終了しません",
        ),
        "trunks.name_duplicate": _m(
            '"{value}" is also the name of trunk #{position}',
            "「{value}」は {position}番目のトランクの名前にも使われています",
        ),
        "trunks.address_duplicate": _m(
            "{host} is also the address of trunk {other}: "
            "trunks are told apart by source IP address",
            "{host} はトランク {other} のアドレスにも使われています。"
            "トランクは送信元 IP アドレスで見分けるため、重複できません",
        ),
        # -- [tenant] -------------------------------------------------------------------------
        "tenant.domain_invalid": _m(
            '"{value}" is not a domain name', "「{value}」はドメイン名ではありません"
        ),
        "tenant.timezone_unknown": _m(
            '"{value}" is not a time zone name (e.g. "Asia/Tokyo")',
            '「{value}」はタイムゾーン名ではありません(例: "Asia/Tokyo")',
        ),
        "tenant.forward_caller_id_invalid": _m(
            '"{value}" must be "original" or "user"',
            '「{value}」は使えません。"original" か "user" を指定してください',
        ),
        "tenant.encryption_invalid": _m(
            '"{value}" must be "allow" or "require"',
            '「{value}」は使えません。"allow" か "require" を指定してください',
        ),
        "tenant.encryption_rtpengine": _m(
            '"require" needs SRTP, which [media] engine = "rtpengine" does not relay here '
            "(only the built-in relay does)",
            '"require" には SRTP が必要ですが、[media] engine = "rtpengine" では使えません'
            "(SRTP は内蔵リレーのみ対応)",
        ),
        "tenant.no_numbers": _m(
            "the tenant has no phone numbers ([[numbers]])",
            "電話番号([[numbers]])が1つもありません",
        ),
        # -- numbers ------------------------------------------------------------------------
        "number.invalid": _m(
            '"{value}" is not a phone number (0 followed by 9 or 10 digits, e.g. "0312345678")',
            '「{value}」は電話番号ではありません(0 に続けて9桁か10桁の数字です。例: "0312345678")',
        ),
        "number.duplicate": _m(
            "{number} is listed twice (also [[numbers]] #{position})",
            "{number} が2回書かれています({position}番目の電話番号と同じです)",
        ),
        # -- users --------------------------------------------------------------------------
        "user.extension_integer": _m(
            'must be a string of 4 digits in quotes, e.g. "{quoted}" (not the integer {value})',
            '4桁の数字を引用符で囲んで書いてください(例: "{quoted}")。'
            "整数の {value} になっています",
        ),
        "user.extension_format": _m(
            '"{value}" must be exactly 4 half-width digits, 0000-8999',
            "「{value}」は使えません。内線番号は 0000〜8999 の半角数字4桁で入力してください",
        ),
        "user.extension_duplicate": _m(
            "duplicate extension {extension}: already used by user #{position}",
            "内線番号 {extension} が重複しています({position}番目の内線ユーザーが使っています)",
        ),
        "user.ha1_format": _m(
            "must be {length} hexadecimal digits (the {algorithm} HA1 of "
            "extension:realm:password), got {count} characters",
            "{length}桁の16進数({algorithm} による extension:realm:password の HA1)で"
            "指定してください({count}文字になっています)",
        ),
        "user.credential_missing": _m(
            "a credential is required: password, or password_ha1_md5 / password_ha1_sha256",
            "認証情報が必要です。password か、password_ha1_md5 / password_ha1_sha256 を"
            "指定してください",
        ),
        "user.credential_both": _m(
            "give either password or the password_ha1_* hashes, not both (they could disagree)",
            "password と password_ha1_* のハッシュは、どちらか一方だけを指定してください"
            "(両方あると食い違うおそれがあります)",
        ),
        "user.ha1_no_offered_algorithm": _m(
            "no hash for an algorithm the server offers ([auth] algorithms: {offered}): "
            "this user could never authenticate",
            "サーバーが使うアルゴリズム([auth] algorithms: {offered})のハッシュがないため、"
            "この内線ユーザーは認証できません",
        ),
        "user.ha1_missing_algorithm": _m(
            "no hash for {missing}: phones choosing it cannot authenticate",
            "{missing} のハッシュがないため、{missing} を選ぶ電話機は認証できません",
        ),
        "user.caller_id_not_of_tenant": _m(
            '"{value}" is not one of the numbers of tenant {tenant} ({numbers})',
            "「{value}」はテナント {tenant} の電話番号ではありません(電話番号: {numbers})",
            numbers="term",
        ),
        "user.recording_not_allowed": _m(
            "recording is ON but tenant {tenant} has recording_users = 0 "
            "([limits] recording_users)",
            "通話録音が ON ですが、テナント {tenant} の通話録音利用ユーザー数が 0 です",
        ),
        # -- [limits] -----------------------------------------------------------------------
        "limits.max_users_exceeded": _m(
            "{count} users are configured but max_users is {max_users}",
            "内線ユーザーが{count}人設定されていますが、"
            "最大ご利用内線ユーザーID数は {max_users} です",
        ),
        "limits.recording_users_exceeded": _m(
            "{count} users have recording ON ({extensions}) but recording_users "
            "is {recording_users}",
            "通話録音が ON の内線ユーザーが{count}人({extensions})いますが、"
            "通話録音利用ユーザー数は {recording_users} です",
        ),
        # -- forwarding and targets ---------------------------------------------------------
        "target.invalid": _m(
            '"{value}" is not an extension of tenant {tenant} nor a valid external number',
            "「{value}」はテナント {tenant} の内線番号でも、正しい外線番号でもありません",
        ),
        "target.international_off": _m(
            '"{value}" is an international number but international_calls is off '
            "for tenant {tenant}",
            "「{value}」は国際電話の番号ですが、テナント {tenant} は国際電話利用可否が OFF です",
        ),
        "forward.announcement": _m(
            '"{value}" (the after-hours announcement) is only an incoming-rule target, '
            "not a forward target",
            "「{value}」(時間外ガイダンス)は着信設定の着信先にだけ指定でき、"
            "転送先には指定できません",
        ),
        "forward.cycle": _m(
            "forwarding cycle: {steps}", "転送設定がループしています: {steps}", steps="steps"
        ),
        "forward.cycles_truncated": _m(
            "more forwarding cycles than the {limit} listed",
            "転送設定のループが多いため、最初の{limit}件だけを示しています",
        ),
        # -- [[incoming]] -------------------------------------------------------------------
        "incoming.number_not_of_tenant": _m(
            "{number} is not one of the numbers of tenant {tenant} ({numbers})",
            "{number} はテナント {tenant} の電話番号ではありません(電話番号: {numbers})",
            numbers="term",
        ),
        "incoming.targets_required": _m(
            'is required, e.g. "1001,1002" or "009608"',
            '必須です(例: "1001,1002" や "009608")',
        ),
        "incoming.targets_type": _m(
            "must be a comma-separated string in quotes, e.g. {suggestion}, not {actual} {shown}",
            "引用符で囲んだカンマ区切りの文字列で書いてください(例: {suggestion})" + _NOT_TYPE_JA,
            actual="term",
        ),
        "incoming.targets_japanese_commas": _m(
            'Japanese commas "、" read as ","', "読点「、」を「,」として読みました"
        ),
        "incoming.targets_empty_entry": _m(
            "{shown} has an empty entry", "{shown} に空の項目があります"
        ),
        "incoming.target_unknown_extension": _m(
            "unknown extension {extension}: not an extension of tenant {tenant}",
            "内線番号 {extension} はテナント {tenant} にありません",
        ),
        "incoming.target_duplicate": _m("{target} is listed twice", "{target} が2回書かれています"),
        "incoming.announcement_mixed": _m(
            "{announcement} (the after-hours announcement) must be the only target of its "
            "rule, not mixed with {others}",
            "{announcement}(時間外ガイダンス)は、ほかの着信先({others})と一緒には指定できません",
        ),
        "incoming.targets_empty": _m(
            "needs at least one target", "着信先を1つ以上指定してください"
        ),
        "incoming.days_required": _m(
            'is required, e.g. ["mon", "tue", "wed", "thu", "fri"] or "holiday"',
            '必須です(例: ["mon", "tue", "wed", "thu", "fri"] や "holiday")',
        ),
        "incoming.days_empty": _m("needs at least one day", "曜日を1つ以上指定してください"),
        "incoming.day_unknown": _m(
            'unknown day "{value}"; days are mon, tue, wed, thu, fri, sat, sun, holiday',
            "「{value}」は曜日ではありません。"
            "使える曜日: mon(月)、tue(火)、wed(水)、thu(木)、fri(金)、sat(土)、sun(日)、"
            "holiday(祝日)",
        ),
        "incoming.day_unknown_suggest": _m(
            'unknown day "{value}" (did you mean "{suggestion}"?); days are mon, tue, wed, '
            "thu, fri, sat, sun, holiday",
            "「{value}」は曜日ではありません(「{suggestion}」の書き間違いではありませんか?)。"
            "使える曜日: mon(月)、tue(火)、wed(水)、thu(木)、fri(金)、sat(土)、sun(日)、"
            "holiday(祝日)",
        ),
        "time.format": _m(
            '"{value}" must be a time "H:MM[:SS]" or "HH:MM[:SS]", e.g. "8:00" or "19:59:59"',
            "「{value}」は「H:MM[:SS]」か「HH:MM[:SS]」の形の時刻で入力してください"
            '(例: "8:00"、"19:59:59")',
        ),
        "time.invalid": _m(
            '"{value}" is not a time of day', "「{value}」は正しい時刻ではありません"
        ),
        "time.invalid_past_midnight": _m(
            '"{value}" is not a time of day (the last second of a day is "23:59:59")',
            '「{value}」は正しい時刻ではありません(1日の最後の時刻は "23:59:59" です)',
        ),
        "incoming.crosses_midnight": _m(
            "the window {start}-{end} crosses midnight: write it as two rules, "
            "{evening} and {morning}",
            "{start}〜{end} は日付をまたいでいます。{evening} と {morning} の"
            "2つの着信設定に分けてください",
        ),
        "incoming.overlap": _m(
            "overlaps {other} on {days} {start}-{end}: windows of one number may not overlap",
            "{other}と {days} {start}〜{end} の時間が重なっています。"
            "同じ電話番号の着信時間設定は重ねられません",
            other="entity",
            days="days",
        ),
        "incoming.number_without_rule": _m(
            "no incoming rule: every call to this number is refused (480)",
            "着信設定がありません。この番号への着信はすべてお断りします(480)",
        ),
        "incoming.gaps": _m(
            "no rule covers {gaps} (calls then are refused with 480)",
            "{gaps} はどの着信設定にも当てはまりません(その時間の着信はお断りします: 480)",
            gaps="gaps",
        ),
        # -- across tenants -----------------------------------------------------------------
        "number.other_tenant": _m(
            "{number} is also a number of tenant {other} ({path})",
            "{number} はテナント {other}({path})の電話番号でもあります",
        ),
        "tenant.domain_other_tenant": _m(
            '"{domain}" is also the domain of tenant {other} ({path})',
            "「{domain}」はテナント {other}({path})のドメインでもあります",
        ),
        "tenant.default_twice": _m(
            "tenant {other} is marked default too: at most one tenant may be",
            "テナント {other} も既定(default = true)になっています。"
            "既定にできるテナントは1つだけです",
        ),
        "tenants.no_default": _m(
            "no tenant is marked default = true: requests to the server's address "
            "(not a tenant domain) are refused",
            "default = true のテナントがありません。"
            "サーバーのアドレス宛て(テナントのドメイン以外)のリクエストはお断りします",
        ),
    }
)


# --------------------------------------------------------------------------------------------
# Parameter values that are words


_TERMS_JA: Mapping[str, str] = MappingProxyType(
    {
        # what a value must be (type.wrong "expected")
        "a string": "文字列",
        "an integer": "整数",
        "true or false": "true か false",
        "an array of strings": "文字列の配列",
        # TOML types (the "actual" of type problems)
        "boolean": "真偽値",
        "integer": "整数",
        "float": "小数",
        "string": "文字列",
        "array": "配列",
        "table": "テーブル",
        "date/time": "日付・時刻",
        # a tenant without numbers
        "none": "なし",
        # the system's reasons for an unreadable file
        "No such file or directory": "ファイルがありません",
        "Permission denied": "読み取る権限がありません",
        "Is a directory": "フォルダーです",
    }
)

_DAYS_JA: Mapping[str, str] = MappingProxyType(
    {
        "mon": "月",
        "tue": "火",
        "wed": "水",
        "thu": "木",
        "fri": "金",
        "sat": "土",
        "sun": "日",
        "holiday": "祝日",
    }
)

_FORWARD_KINDS_JA: Mapping[str, str] = MappingProxyType(
    {"busy": "ビジー時", "no_answer": "無応答時", "offline": "オフライン時"}
)

# tomllib's reasons (Python 3.11-3.13); a reason not listed stays as tomllib wrote it.
_TOML_REASONS_JA: Mapping[str, str] = MappingProxyType(
    {
        "Invalid statement": "この行の書き方が正しくありません",
        "Expected newline or end of document after a statement": (
            "項目の後ろに余分な文字があります(1行に1つの項目を書いてください)"
        ),
        "Cannot overwrite a value": "同じ項目が2回書かれています",
        "Expected ']' at the end of a table declaration": "テーブル名の後ろに ] がありません",
        "Expected ']]' at the end of an array declaration": (
            "テーブル配列名の後ろに ]] がありません"
        ),
        "Expected '=' after a key in a key/value pair": "項目名の後ろに = がありません",
        "Invalid initial character for a key part": "項目名の最初の文字が正しくありません",
        "Unclosed array": "配列が ] で閉じられていません",
        "Unclosed inline table": "インラインテーブルが } で閉じられていません",
        "Unescaped '\\' in a string": "文字列の中の \\ がエスケープされていません",
        "Invalid hex value": "16進数の値が正しくありません",
        "Escaped character is not a Unicode scalar value": (
            "エスケープした文字が Unicode の文字ではありません"
        ),
        "Unterminated string": "文字列が閉じられていません",
        "Invalid date or datetime": "日付・時刻が正しくありません",
        "Invalid value": "値が正しくありません",
    }
)
_TOML_PATTERNS_JA: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Expected (.+)"), "{0} が必要です"),
    (re.compile(r"Found invalid character (.+)"), "使えない文字 {0} があります"),
    (re.compile(r"Illegal character (.+)"), "文字列に使えない文字 {0} があります"),
    (re.compile(r"Cannot declare (.+) twice"), "{0} が2回定義されています"),
    (re.compile(r"Cannot mutate immutable namespace (.+)"), "{0} はここでは変更できません"),
    (re.compile(r"Cannot redefine namespace (.+)"), "{0} は定義し直せません"),
    (re.compile(r"Duplicate inline table key (.+)"), "インラインテーブルに {0} が2回あります"),
)
_TOML_WHERE = re.compile(
    r"(?P<reason>.*) \(at (?:line (?P<line>\d+), column (?P<column>\d+)|end of document)\)"
)


def _days_ja(text: str) -> str:
    """ "mon-fri, holiday" -> "月〜金・祝日" (the English day list of a problem)."""
    parts = []
    for part in text.split(", "):
        first, _, last = part.partition("-")
        day = _DAYS_JA.get(first, first)
        parts.append(f"{day}〜{_DAYS_JA.get(last, last)}" if last else day)
    return "・".join(parts)


def _span_ja(text: str) -> str:
    return text.replace("-", "〜")


def _gaps_ja(text: str) -> str:
    """ "sat-sun all day, mon, wed 20:00:00-23:59:59" -> "土〜日 終日、月・水 20:00:00〜23:59:59".

    A group is day names (no spaces) ending in one with its time: "all day" or spans.
    """
    groups: list[str] = []
    days: list[str] = []
    for piece in text.split(", "):
        day, space, when = piece.partition(" ")
        days.append(day)
        if not space:
            continue
        spans = "終日" if when == "all day" else " と ".join(map(_span_ja, when.split(" and ")))
        groups.append(f"{_days_ja(', '.join(days))} {spans}")
        days = []
    return "、".join(groups)


_STEP = re.compile(r"(\S+) (\S+) -> (\S+)")


def _steps_ja(text: str) -> str:
    """ "1001 busy/offline -> 1002, 1002 no_answer -> 1001" in the manual's words."""
    steps = []
    for piece in text.split(", "):
        match = _STEP.fullmatch(piece)
        if match is None:
            return text
        kinds = "・".join(_FORWARD_KINDS_JA.get(k, k) for k in match[2].split("/"))
        steps.append(f"{match[1]}({kinds})→ {match[3]}")
    return "、".join(steps)


def _toml_ja(text: str) -> str:
    """tomllib's "Reason (at line 3, column 8)" as "3行目 8文字目: 理由"."""
    match = _TOML_WHERE.fullmatch(text)
    reason, where = text, ""
    if match is not None:
        reason = match["reason"]
        where = (
            f"{match['line']}行目 {match['column']}文字目" if match["line"] else "ファイルの末尾"
        )
    said = _TOML_REASONS_JA.get(reason)
    if said is None:
        for pattern, template in _TOML_PATTERNS_JA:
            found = pattern.fullmatch(reason)
            if found is not None:
                said = template.format(found[1])
                break
    said = said if said is not None else reason
    return f"{where}: {said}" if where else said


_ENTITY_PATTERNS_JA: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"tenant (.+)"), "テナント {0}"),
    (re.compile(r"user #(\d+)"), "{0}番目の内線ユーザー"),
    (re.compile(r"user (.+) \(#(\d+)\)"), "内線ユーザー {0}({1}番目)"),
    (re.compile(r"user (.+)"), "内線ユーザー {0}"),
    (re.compile(r"number #(\d+)"), "{0}番目の電話番号"),
    (re.compile(r"number (.+)"), "電話番号 {0}"),
    (re.compile(r"incoming rule #(\d+) \(number (.+)\)"), "{0}番目の着信設定(電話番号 {1})"),
    (re.compile(r"incoming rule #(\d+)"), "{0}番目の着信設定"),
    (re.compile(r"trunk #(\d+)"), "{0}番目のトランク"),
    (re.compile(r"trunk (.+)"), "トランク {0}"),
)


def _entity_ja(entity: str) -> str:
    for pattern, template in _ENTITY_PATTERNS_JA:
        match = pattern.fullmatch(entity)
        if match is not None:
            return template.format(*match.groups())
    return entity  # "[calls]" and the like: section names are TOML


_KIND_JA: Mapping[ParamKind, Callable[[str], str]] = MappingProxyType(
    {
        "term": lambda value: _TERMS_JA.get(value, value),
        "days": _days_ja,
        "gaps": _gaps_ja,
        "steps": _steps_ja,
        "entity": _entity_ja,
        "toml": _toml_ja,
    }
)


# Fields in the control-panel manual's words; others (pbx.toml keys, typos) show as written.
_FIELDS_JA: Mapping[str, str] = MappingProxyType(
    {
        "domain": "ドメイン",
        "timezone": "タイムゾーン",
        "default": "既定のテナント",
        "qualify_seconds": "死活監視の間隔(秒)",
        "auth_algorithms": "認証方式(ダイジェスト)",
        "forward_caller_id": "転送時の発信者番号",
        "encryption": "暗号化通信",
        "limits.max_users": "最大ご利用内線ユーザーID数",
        "limits.recording_users": "通話録音利用ユーザー数",
        "limits.international_calls": "国際電話利用可否",
        "numbers": "電話番号",
        "number": "電話番号",
        "users": "内線ユーザー",
        "extension": "内線番号",
        "password": "パスワード",
        "password_ha1_md5": "パスワード(MD5 ハッシュ)",
        "password_ha1_sha256": "パスワード(SHA-256 ハッシュ)",
        "name": "名前",
        "department": "部署",
        "caller_id": "発信時通知番号",
        "recording": "通話録音",
        "forward": "転送設定",
        "forward.busy": "転送設定(ビジー時)",
        "forward.no_answer": "転送設定(無応答時)",
        "forward.offline": "転送設定(オフライン時)",
        "incoming": "着信設定",
        "tenant": "テナント",
        "limits": "ご利用数",
        "targets": "着信先内線ユーザー",
        "days": "曜日",
        "start": "着信時間設定(開始)",
        "end": "着信時間設定(終了)",
        "start-end": "着信時間設定",
    }
)


# --------------------------------------------------------------------------------------------
# Rendering


def render_message(code: str, params: Mapping[str, str], lang: Lang) -> str:
    """The text of problem ``code`` with ``params`` in ``lang``; unknown codes raise KeyError."""
    message = CATALOG[code]
    if lang == "en":
        return message.en.format_map(params)
    values = dict(params)
    for name, kind in message.kinds:
        if name in values:
            values[name] = _KIND_JA[kind](values[name])
    return message.ja.format_map(values)


def english(code: str, params: Mapping[str, str]) -> str:
    """The English message of a problem (what ``ConfigProblem.message`` holds)."""
    return render_message(code, params, "en")


def render_problem(problem: ConfigProblem, lang: Lang) -> str:
    """What is wrong, in ``lang`` (English: ``problem.message``)."""
    if lang == "en" or problem.code not in CATALOG:
        return problem.message
    return render_message(problem.code, problem.params, lang)


def render_entity(problem: ConfigProblem, lang: Lang) -> str:
    """The entity in the admin's terms: "user 1001" / "内線ユーザー 1001"."""
    return problem.entity if lang == "en" else _entity_ja(problem.entity)


def render_field(problem: ConfigProblem, lang: Lang) -> str:
    """The field in the admin's terms: "forward.busy" / "転送設定(ビジー時)".

    pbx.toml's keys (a section's or a trunk's) stay as written: the operator types them.
    """
    if lang == "en" or problem.entity.startswith(("[", "trunk ")):
        return problem.field
    return _FIELDS_JA.get(problem.field, problem.field)


def render_line(problem: ConfigProblem, lang: Lang) -> str:
    """The whole problem on one line (English: ``str(problem)``)."""
    parts = (
        problem.file,
        render_entity(problem, lang),
        render_field(problem, lang),
        render_problem(problem, lang),
    )
    return ": ".join(part for part in parts if part)
