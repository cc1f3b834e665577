"""The panel's words: Japanese (the control-panel manual's own labels) first, English second.

Every label a page shows is a key of ``WORDS``; ``words(lang)`` gives the table of one language.
A test checks that every key has both languages and that every key a template uses exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

Lang = Literal["ja", "en"]
LANGS: tuple[Lang, ...] = ("ja", "en")
DEFAULT_LANG: Lang = "ja"

# key: (Japanese, English)
_PAIRS: dict[str, tuple[str, str]] = {
    # frame
    "app.title": ("コントロールパネル", "Control panel"),
    "nav.settings": ("設定変更", "Settings"),
    "nav.usage": ("ご利用数変更", "Usage limits"),
    "nav.numbers": ("番号の決定", "Phone numbers"),
    "nav.users": ("内線ユーザー", "Extension users"),
    "nav.incoming": ("着信設定", "Inbound settings"),
    "nav.versions": ("変更履歴", "Previous versions"),
    "nav.tenants": ("テナント一覧", "Tenants"),
    "nav.pool": ("番号プール", "Number pool"),
    "nav.accounts": ("管理者アカウント", "Admin accounts"),
    "nav.audit": ("操作ログ", "Audit log"),
    "nav.logout": ("ログアウト", "Sign out"),
    "nav.signed_in_as": ("ログイン中", "Signed in as"),
    "nav.skip": ("本文へ移動", "Skip to content"),
    "lang.switch": ("English", "日本語"),
    "role.operator": ("運用者", "Operator"),
    "role.tenant_admin": ("テナント管理者", "Tenant admin"),
    # sign-in
    "login.title": ("ログイン", "Sign in"),
    "login.name": ("アカウント名", "Account name"),
    "login.password": ("パスワード", "Password"),
    "login.submit": ("ログイン", "Sign in"),
    "login.failed": (
        "アカウント名またはパスワードが違います。",
        "The account name or password is wrong.",
    ),
    "login.wait": (
        "ログインの失敗が続いたため、{seconds}秒待ってからもう一度お試しください。",
        "Too many failed sign-ins: wait {seconds} seconds, then try again.",
    ),
    "login.locked": (
        "ログインの失敗が続いたため、{minutes}分間ロックされています。",
        "Too many failed sign-ins: locked for {minutes} minutes.",
    ),
    "login.expired": (
        "セッションの有効期限が切れました。もう一度ログインしてください。",
        "Your session has expired. Please sign in again.",
    ),
    # common
    "common.save": ("保存", "Save"),
    "common.cancel": ("キャンセル", "Cancel"),
    "common.delete": ("削除", "Delete"),
    "common.edit": ("編集", "Edit"),
    "common.add": ("追加", "Add"),
    "common.search": ("検索", "Search"),
    "common.on": ("ON", "ON"),
    "common.off": ("OFF", "OFF"),
    "common.none": ("なし", "None"),
    "common.optional": ("任意", "optional"),
    "common.required": ("必須", "required"),
    "common.saved": (
        "保存しました。設定ファイルを更新し、サーバーに反映しました(バージョン {version})。",
        "Saved. The tenant file was updated and the server reloaded (version {version}).",
    ),
    "common.fix_below": (
        "保存できませんでした。下の項目を確認してください。",
        "Not saved. Please check the fields below.",
    ),
    "common.stale": (
        "このページを開いた後に、他の管理者またはファイルの直接編集で設定が変更されました。"
        "入力内容は保存していません。最新の内容を確認してから、もう一度入力してください。",
        "The settings were changed by another admin or by a hand edit of the file since this page "
        "was opened. Nothing was saved. Check the current settings, then enter your change again.",
    ),
    "common.elsewhere": (
        "他の設定に問題があるため保存できません。運用者にお問い合わせください。",
        "Not saved: another part of the configuration has problems. Please contact the operator.",
    ),
    "common.csrf": (
        "フォームの有効期限が切れました。ページを開き直してから、もう一度お試しください。",
        "The form has expired. Please reload the page and try again.",
    ),
    "common.not_found": ("ページが見つかりません。", "Page not found."),
    "common.page": ("{page} / {pages} ページ", "Page {page} of {pages}"),
    "common.prev": ("前へ", "Previous"),
    "common.next": ("次へ", "Next"),
    "common.back": ("戻る", "Back"),
    "common.confirm_delete": ("本当に削除しますか?", "Delete for good?"),
    "common.reload_failed": (
        "ファイルは保存しましたが、サーバーへの反映に失敗しました: {error}",
        "The file was saved but the server did not reload: {error}",
    ),
    "common.problems_elsewhere_operator": (
        "他のファイルの問題",
        "Problems in other files",
    ),
    # edits that could not be applied (pbx.panel.saving.edit_error_code)
    "save.user_exists": (
        "この内線番号はすでに使われています。別の番号を入力してください。",
        "This extension is already taken: choose another one.",
    ),
    "save.user_missing": (
        "この内線ユーザーはすでに削除されています。一覧を開き直してください。",
        "This user no longer exists: open the list again.",
    ),
    "save.password_required": (
        "パスワードを入力するか、自動作成を選んでください。",
        "Type a password or choose to generate one.",
    ),
    # 着信設定 (inbound rules, per number: pbx/panel/inbound_pages.py)
    "incoming.title": ("着信設定", "Inbound settings"),
    "incoming.intro": (
        "選択した電話番号に電話がかかってきた時に、「何時~何時」までの間「どの内線」を鳴らすかを"
        "設定します。各着信設定は時間を重複して設定することができません。",
        "Which extensions ring for a call to this number, on which days and between which times. "
        "The rules of a number may not overlap.",
    ),
    "incoming.numbers": ("電話番号", "Number"),
    "incoming.rule_count": ("着信設定 {count} 件", "{count} rules"),
    "incoming.no_numbers": (
        "電話番号がまだありません。先に「番号の決定」で電話番号を選んでください。",
        "No numbers yet: choose them under Phone numbers first.",
    ),
    "incoming.rules": ("着信設定の一覧", "Rules"),
    "incoming.rule": ("着信設定{index}", "Rule {index}"),
    "incoming.no_rules": (
        "着信設定がありません。この番号への着信はすべてお断りします(480)。",
        "No rules: every call to this number is refused (480).",
    ),
    "incoming.targets": ("着信先内線ユーザー", "Targets"),
    "incoming.targets_help": (
        "鳴らす内線番号を選択・もしくは直接記入して下さい。直接記入する場合は半角カンマ(,)で"
        "区切ります。時間外ガイダンスは「009608」、外線に転送する場合は外線番号(例: 0300001234)を"
        "記入します。",
        "Pick the extensions to ring or type them separated by commas. 009608 plays the "
        "after-hours announcement; an external number (e.g. 0300001234) forwards the call out.",
    ),
    "incoming.pick": ("内線ユーザーから選択", "Pick from the users"),
    "incoming.days": ("曜日", "Days"),
    "incoming.day_mon": ("月", "Mon"),
    "incoming.day_tue": ("火", "Tue"),
    "incoming.day_wed": ("水", "Wed"),
    "incoming.day_thu": ("木", "Thu"),
    "incoming.day_fri": ("金", "Fri"),
    "incoming.day_sat": ("土", "Sat"),
    "incoming.day_sun": ("日", "Sun"),
    "incoming.day_holiday": ("祝日", "Holidays"),
    "incoming.holiday_help": (
        "祝日を選んだ着信設定がある番号では、祝日にはその着信設定だけが使われます。",
        "Once a rule of a number lists holidays, only such rules apply to it on a holiday.",
    ),
    "incoming.time": ("着信時間設定", "Time"),
    "incoming.start": ("開始", "From"),
    "incoming.end": ("終了", "Until"),
    "incoming.time_help": (
        "時間設定は全て半角で「0:00:00」等でご記入・選択してください。秒を省いた終了時刻は"
        "その分の59秒までです(19:59 → 19:59:59)。",
        "Times are written like 0:00:00 (typed or chosen). An end without seconds lasts the whole "
        "minute (19:59 means through 19:59:59).",
    ),
    "incoming.add": ("着信設定を追加", "Add a rule"),
    "incoming.edit": ("着信設定{index}を編集", "Edit rule {index}"),
    "incoming.delete_confirm": ("着信設定{index}を削除", "Delete rule {index}"),
    "incoming.deleted": ("着信設定を削除しました。", "The rule was deleted."),
    "incoming.timeline": ("週間スケジュール", "Week at a glance"),
    "incoming.timeline_help": (
        "色の帯が着信設定、斜線はどの着信設定にも当てはまらない時間(着信をお断りします)、"
        "赤は他の着信設定と重なっている時間です。",
        "Coloured bands are rules; hatched stretches are covered by no rule (calls are refused); "
        "red marks seconds another rule already holds.",
    ),
    "incoming.overlap": (
        "保存できません。着信設定は時間を重複して設定することができません。",
        "Not saved: the rules of a number may not overlap.",
    ),
    "incoming.midnight": (
        "{start}〜{end} は日をまたいでいます。時間設定は日をまたいで設定することができないため、"
        "次の着信設定に分けて保存します:",
        "{start}-{end} crosses midnight, which one rule cannot do. Save it as these rules instead:",
    ),
    "incoming.split": ("分けて保存", "Save as split"),
    "incoming.test": ("この時刻にかかってきたら", "If a call came at this moment"),
    "incoming.test_help": (
        "日時を選ぶと、その時刻にこの番号へかかってきた着信がどう処理されるかを表示します"
        "(実際には発信しません)。話し中・オフラインとみなす内線も指定できます。",
        "Pick a date and time to see how a call to this number would be handled then (no call "
        "is placed). Extensions may be taken as busy or offline.",
    ),
    "incoming.test_date": ("日付", "Date"),
    "incoming.test_time": ("時刻", "Time"),
    "incoming.test_busy": ("話し中とみなす内線", "Taken as busy"),
    "incoming.test_offline": ("オフラインとみなす内線", "Taken as offline"),
    "incoming.test_run": ("確認する", "Check"),
    "incoming.test_at": ("{when} の着信", "A call at {when}"),
    "incoming.test_rule": ("着信設定{index}が使われます。", "Rule {index} applies."),
    "incoming.test_no_rule": (
        "この時刻に当てはまる着信設定はありません。",
        "No rule covers this moment.",
    ),
    "incoming.test_at_start": ("着信時", "On arrival"),
    "incoming.test_after": ("{seconds}秒後", "After {seconds} s"),
    "incoming.test_rings": ("鳴らす先", "Rings"),
    "incoming.test_hears": ("発信者に聞こえるもの", "The caller hears"),
    "incoming.hears_ringing": ("呼び出し音", "ringing"),
    "incoming.hears_announcement": (
        "時間外ガイダンス(009608)",
        "the after-hours announcement (009608)",
    ),
    "incoming.final_480": ("お断り(480 応答できません)", "refused (480 Temporarily Unavailable)"),
    "incoming.final_486": ("話し中(486)", "busy (486 Busy Here)"),
    "incoming.final_other": ("通話終了({code})", "call ended ({code})"),
    "incoming.test_trace": ("判断の記録", "Trace"),
    "save.rule_missing": (
        "この着信設定はすでに変更・削除されています。ページを開き直してください。",
        "This rule was changed or deleted meanwhile: open the page again.",
    ),
    # settings menu (dashboard)
    "menu.title": ("設定変更", "Settings"),
    "menu.intro": (
        "ご利用数決定 → 番号の決定 → 内線ユーザー作成 → 着信設定 の順に設定してください。",
        "Set up in this order: usage limits → phone numbers → extension users → inbound settings.",
    ),
    "menu.step_usage": (
        "最大ご利用内線ユーザーID数・通話録音利用ユーザー数・国際電話の利用有無を設定します。",
        "Set the most extension users, the recording seats and international calls.",
    ),
    "menu.step_numbers": (
        "ご利用になられる電話番号を選択してください。",
        "Choose the phone numbers you use.",
    ),
    "menu.step_users": (
        "内線ユーザーIDを作成、発信時の番号設定や転送設定を行います。",
        "Create extension users, their caller ID and their forwards.",
    ),
    "menu.step_incoming": (
        "電話番号ごとに、着信時に鳴らす内線と時間を設定します。",
        "Which extensions ring when, per number.",
    ),
    # usage limits
    "usage.title": ("ご利用数変更", "Usage limits"),
    "usage.max_users": ("最大ご利用内線ユーザーID数", "Most extension users"),
    "usage.max_users_help": (
        "ここで設定した内線ユーザーID数が当月のご利用料金となります。",
        "The month is billed on this number of extension users.",
    ),
    "usage.recording_users": ("通話録音利用ユーザー数", "Recording users"),
    "usage.recording_help": (
        "内線ユーザーIDの設定で、録音のON・OFFを設定することができます。",
        "Recording is switched ON or OFF per extension user.",
    ),
    "usage.international": ("国際電話利用可否", "International calls"),
    "usage.international_help": (
        "国際電話を利用する場合はONにしてください。(デフォルトではOFFになっています。)",
        "Turn ON to allow international calls (OFF by default).",
    ),
    "usage.in_use": ("現在の利用状況", "In use now"),
    "usage.users_used": ("内線ユーザー {used} / {max}", "Extension users {used} / {max}"),
    "usage.recording_used": (
        "通話録音 {used} 人使用中 / 残り {free}",
        "Recording {used} in use / {free} free",
    ),
    # numbers
    "numbers.title": ("番号の決定", "Phone numbers"),
    "numbers.mine": ("ご利用中の電話番号", "Your numbers"),
    "numbers.free": ("選択できる電話番号", "Numbers you can choose"),
    "numbers.none_free": ("選択できる電話番号がありません。", "No free numbers are available."),
    "numbers.none_mine": ("電話番号がまだありません。", "No numbers yet."),
    "numbers.take": ("この番号を使う", "Use this number"),
    "numbers.release": ("解約する", "Release"),
    "numbers.in_use_by": (
        "{number} は次の設定で使われているため解約できません: {places}",
        "{number} cannot be released: it is used by {places}",
    ),
    "numbers.used_caller_id": ("内線 {ext} の発信時通知番号", "caller ID of extension {ext}"),
    "numbers.used_incoming": ("着信設定 {position}", "inbound rule {position}"),
    "numbers.taken": (
        "{number} は使用できません(他で使用中かプールにありません)。",
        "{number} is not available (taken, or not in the pool).",
    ),
    # users
    "users.title": ("内線ユーザー一覧", "Extension users"),
    "users.add": ("ユーザー追加", "Add user"),
    "users.edit": ("ユーザー編集", "Edit user"),
    "users.delete": ("ユーザー削除", "Delete user"),
    "users.extension": ("内線番号", "Extension"),
    "users.extension_help": (
        "0000~8999までの4桁でご入力下さい。",
        "4 digits, 0000 to 8999.",
    ),
    "users.name": ("名前", "Name"),
    "users.department": ("部署", "Department"),
    "users.caller_id": ("発信時通知番号", "Outbound caller ID"),
    "users.caller_id_help": (
        "この内線ユーザーIDから発信した時に、相手に通知する番号です。",
        "The number shown to the far end when this user calls out.",
    ),
    "users.recording": ("通話録音", "Call recording"),
    "users.recording_full": (
        "通話録音利用ユーザー数({max})に達しているため、ONにできません。"
        "「ご利用数変更」で通話録音利用ユーザー数を増やしてください。",
        "All {max} recording seats are taken: raise the recording users in Usage limits first.",
    ),
    "users.recording_none": (
        "「ご利用数変更」で通話録音利用ユーザー数が設定されている場合のみご利用できます。",
        "Available only when recording users are set in Usage limits.",
    ),
    "users.forward": ("転送設定", "Forwarding"),
    "users.forward_busy": ("ビジー時", "When busy"),
    "users.forward_no_answer": ("無応答時", "On no answer"),
    "users.forward_offline": ("オフライン時", "When offline"),
    "users.forward_help": (
        "内線番号を選ぶか、外線電話番号を入力してください。",
        "Pick an extension or type an external number.",
    ),
    "users.forward_busy_help": (
        "話し中で電話に出られない場合に転送します。",
        "Forward when the user is on a call.",
    ),
    "users.forward_no_answer_help": (
        "着信が鳴って20秒以内に電話に出ない場合に転送します。",
        "Forward when the call rings 20 seconds unanswered.",
    ),
    "users.forward_offline_help": (
        "何等かの原因でレジストできていない場合に転送します。",
        "Forward when the phone is not registered.",
    ),
    "users.password": ("パスワード", "Password"),
    "users.password_generated": (
        "強力なパスワードを自動で作成します(空欄のまま)。",
        "Leave empty to generate a strong password.",
    ),
    "users.password_keep": (
        "変更する場合のみ入力してください。「新しく作成」で自動作成します。",
        "Type a new one only to change it, or tick 'generate' for a new strong one.",
    ),
    "users.password_regenerate": ("新しいパスワードを自動作成する", "Generate a new password"),
    "users.password_shown_once": (
        "内線 {ext} のパスワードです。この画面を閉じると二度と表示されません。"
        "アプリ・SIP電話機に設定してください。",
        "The password of extension {ext}. It is shown only this once: enter it in the phone now.",
    ),
    "users.password_weak": (
        "パスワードは8文字以上で入力してください。",
        "A password needs at least 8 characters.",
    ),
    "users.over_max": (
        "最大ご利用内線ユーザーID数({max})に達しているため、追加できません。",
        "The tenant already has its most extension users ({max}): none can be added.",
    ),
    "users.count": ("{count} 件", "{count} users"),
    "users.none": ("内線ユーザーがまだいません。", "No extension users yet."),
    "users.search_placeholder": ("内線番号・名前・部署", "Extension, name, department"),
    "users.deleted": ("内線 {ext} を削除しました。", "Extension {ext} deleted."),
    "users.choose": ("選択してください", "Choose"),
    "users.external": ("外線番号を入力", "External number"),
    # versions
    "versions.title": ("変更履歴", "Previous versions"),
    "versions.intro": (
        "パネルで保存するたびに、以前の設定ファイルを保管しています。",
        "Each save keeps the previous tenant file here.",
    ),
    "versions.restore": ("この版に戻す", "Restore this version"),
    "versions.none": ("以前の版はまだありません。", "No previous versions yet."),
    "versions.saved_at": ("保管日時", "Kept at"),
    # operator
    "tenants.title": ("テナント一覧", "Tenants"),
    "tenants.id": ("テナントID", "Tenant id"),
    "tenants.id_help": (
        "半角英小文字・数字・ハイフン(設定ファイル名になります)",
        "Lower-case letters, digits and hyphens (the tenant file's name)",
    ),
    "tenants.domain": ("SIPドメイン", "SIP domain"),
    "tenants.users": ("内線ユーザー数", "Users"),
    "tenants.create": ("テナント作成", "Create tenant"),
    "tenants.remove": ("テナント削除", "Remove tenant"),
    "tenants.open": ("設定を開く", "Open settings"),
    "tenants.exists": ("そのテナントIDはすでに使われています。", "That tenant id is taken."),
    "tenants.bad_id": (
        "テナントIDは半角英小文字・数字・ハイフンで入力してください(2〜32文字)。",
        "A tenant id is 2-32 lower-case letters, digits and hyphens.",
    ),
    "tenants.removed": ("テナント {tenant} を削除しました。", "Tenant {tenant} removed."),
    "tenants.created": ("テナント {tenant} を作成しました。", "Tenant {tenant} created."),
    "pool.title": ("番号プール", "Number pool"),
    "pool.intro": (
        "キャリアから割り当てられた電話番号です。テナントはここから番号を選択します。",
        "The numbers the carrier gave us; tenants choose their numbers from here.",
    ),
    "pool.number": ("電話番号", "Phone number"),
    "pool.note": ("メモ", "Note"),
    "pool.owner": ("使用テナント", "Used by"),
    "pool.add": ("番号を追加", "Add number"),
    "pool.remove": ("プールから外す", "Remove from pool"),
    "pool.in_use": (
        "{number} はテナント {tenant} が使用中のため外せません。",
        "{number} is used by tenant {tenant}: release it there first.",
    ),
    "pool.exists": ("{number} はすでにプールにあります。", "{number} is already in the pool."),
    "accounts.title": ("管理者アカウント", "Admin accounts"),
    "accounts.name": ("アカウント名", "Account name"),
    "accounts.role": ("権限", "Role"),
    "accounts.tenant": ("テナント", "Tenant"),
    "accounts.create": ("テナント管理者を作成", "Create tenant admin"),
    "accounts.created": (
        "アカウント {name} を作成しました。パスワード: {password}(この画面でのみ表示されます)",
        "Account {name} created. Password: {password} (shown only here)",
    ),
    "accounts.exists": ("そのアカウント名はすでに使われています。", "That account name is taken."),
    "accounts.bad_name": (
        "アカウント名は半角英数字と . _ - で入力してください(3〜64文字)。",
        "An account name is 3-64 letters, digits, '.', '_' or '-'.",
    ),
    "accounts.delete": ("削除", "Delete"),
    "accounts.deleted": ("アカウント {name} を削除しました。", "Account {name} deleted."),
    "audit.title": ("操作ログ", "Audit log"),
    "audit.at": ("日時", "When"),
    "audit.actor": ("操作者", "Who"),
    "audit.tenant": ("テナント", "Tenant"),
    "audit.action": ("操作", "Action"),
    "audit.target": ("対象", "Target"),
    "audit.detail": ("内容", "What changed"),
    "audit.older": ("さらに古いログ", "Older entries"),
    # -- live status and phone setup (登録状況 / 端末設定) --
    "status.nav": ("登録状況・通話中", "Status and calls"),
    "status.title": ("登録状況・通話中", "Registrations and calls"),
    "status.search": ("内線番号・名前・部署で絞り込み", "Filter by extension, name, department"),
    "status.search_button": ("絞り込み", "Filter"),
    "status.snapshot": (
        "表示した時点の状況です(自動更新にはJavaScriptが必要です)。",
        "As of when the page was shown (automatic updates need JavaScript).",
    ),
    "status.live": ("自動更新中", "Updating live"),
    "status.stopped": (
        "自動更新を停止しました。最新の状況はページを再読み込みしてください。",
        "Automatic updates stopped. Reload the page for the current status.",
    ),
    "status.summary": (
        "オンライン {online} / {total} ユーザー、通話中 {calls} 件",
        "{online} of {total} users online, {calls} calls in progress",
    ),
    "status.users": ("内線ユーザーの登録状況", "Extension users"),
    "status.state": ("状態", "State"),
    "status.devices": ("登録端末", "Registered devices"),
    "status.online": ("オンライン", "Online"),
    "status.offline": ("オフライン", "Offline"),
    "status.activity_talking": ("通話中", "On a call"),
    "status.activity_ringing": ("呼出中", "Ringing"),
    "status.unknown_agent": ("(端末名なし)", "(no user agent)"),
    "status.expires_at": ("有効期限 {at}", "expires {at}"),
    "status.unreachable": ("応答なし", "not answering"),
    "status.no_users": ("該当する内線ユーザーはいません。", "No matching extension users."),
    "status.prev": ("前へ", "Previous"),
    "status.next": ("次へ", "Next"),
    "status.page": ("{page} / {pages} ページ", "Page {page} of {pages}"),
    "status.calls": ("通話中の通話", "Calls in progress"),
    "status.caller": ("発信者", "Caller"),
    "status.called": ("着信先", "Called"),
    "status.started_at": ("開始時刻", "Started"),
    "status.answered_by": ("応答した内線", "Answered by"),
    "status.call_ringing": ("呼出中", "Ringing"),
    "status.call_answered": ("通話中", "Answered"),
    "status.no_calls": ("通話中の通話はありません。", "No calls in progress."),
    "phone.title": ("端末設定", "Phone setup"),
    "phone.intro": (
        "アプリ・SIP電話機・ソフトフォンに次の値を設定してください。",
        "Enter these values in the app, SIP phone or softphone.",
    ),
    "phone.item": ("項目", "Setting"),
    "phone.value": ("設定値", "Value"),
    "phone.labels": ("端末での表記の例", "As phones label it"),
    "phone.server": ("SIPサーバー", "SIP server"),
    "phone.port": ("ポート", "Port"),
    "phone.transport": ("トランスポート", "Transport"),
    "phone.domain": ("ドメイン", "Domain"),
    "phone.username": ("ユーザー名", "User name"),
    "phone.auth_id": ("認証ID", "Authentication ID"),
    "phone.password": ("パスワード", "Password"),
    "phone.also": ("ほかの接続先:", "Also reachable at:"),
    "phone.host_advertise": (
        "SIPサーバーのアドレスは [sip] advertise の設定値です。",
        "The SIP server address is the [sip] advertise setting.",
    ),
    "phone.host_panel": (
        "サーバーは全アドレスで待ち受けているため、このパネルを開いたアドレスを表示しています。"
        "端末から届かない場合は運用者にお問い合わせください。",
        "The server listens on every address, so this is the address you opened this panel on. "
        "Ask your operator if phones cannot reach it.",
    ),
    "phone.default_tenant": (
        "ドメインの代わりにSIPサーバーのアドレスを入力した端末も登録できます。",
        "Phones that enter the SIP server address as the domain can register too.",
    ),
    "phone.show": ("パスワードを表示", "Show password"),
    "phone.show_help": (
        "表示すると操作ログに記録されます。",
        "Showing it is recorded in the audit log.",
    ),
    "phone.hashed_help": (
        "パスワードは復元できない形式(ハッシュ)で保存されているため表示できません。"
        "わからない場合は再発行してください。",
        "The password is stored only as a hash and cannot be shown. "
        "Issue a new one if it is not known.",
    ),
    "phone.reissue": ("パスワードを再発行", "Issue a new password"),
    "phone.reissue_help": (
        "再発行すると今のパスワードは使えなくなり、端末の再設定が必要です。",
        "The current password stops working: the phone must be set up again.",
    ),
    "phone.issued": (
        "新しいパスワードを保存しました。この画面でのみ表示されます。",
        "The new password is saved. It is shown only here.",
    ),
    "phone.no_clear_password": (
        "このユーザーのパスワードはハッシュでのみ保存されているため表示できません。",
        "This user's password is stored only as a hash and cannot be shown.",
    ),
    # 通話履歴 (call history): pbx/panel/history.py
    "history.menu": ("通話履歴", "Call history"),
    "history.title": ("通話履歴", "Call history"),
    "history.intro": (
        "この組織の通話の記録です。新しい順に表示します。",
        "The calls of this tenant, newest first.",
    ),
    "history.from": ("開始日", "From"),
    "history.to": ("終了日", "To"),
    "history.number": ("電話番号", "Phone number"),
    "history.extension": ("内線番号", "Extension"),
    "history.disposition": ("結果", "Result"),
    "history.any": ("すべて", "Any"),
    "history.filter": ("絞り込み", "Filter"),
    "history.clear": ("条件をクリア", "Clear"),
    "history.csv": ("CSVダウンロード", "Download CSV"),
    "history.started": ("日時", "Time"),
    "history.caller": ("発信者", "Caller"),
    "history.called": ("着信番号・内線", "Number or extension called"),
    "history.answered_by": ("応答者", "Answered by"),
    "history.talk": ("通話時間", "Talk time"),
    "history.talk_seconds": ("通話時間(秒)", "Talk time (s)"),
    "history.ring": ("呼び出し時間", "Ringing time"),
    "history.forwards": ("転送", "Forwards"),
    "history.recording": ("録音", "Recording"),
    "history.recorded": ("あり", "yes"),
    "history.call_id": ("通話ID", "Call ID"),
    "history.details": ("詳細", "Details"),
    "history.no_calls": ("条件に合う通話はありません。", "No calls match."),
    "history.older": ("次の{count}件(古い通話)", "Next {count} (older calls)"),
    "history.newest": ("最新の通話に戻る", "Back to the newest calls"),
    "history.disposition_answered": ("応答", "Answered"),
    "history.disposition_busy": ("話中", "Busy"),
    "history.disposition_no_answer": ("無応答", "No answer"),
    "history.disposition_cancelled": ("発信者が切断", "Cancelled by the caller"),
    "history.disposition_failed": ("失敗", "Failed"),
    "history.in_progress": ("通話中", "In progress"),
    "history.bad_date": (
        "日付は 2026-01-31 のように入力してください。",
        "Enter a date like 2026-01-31.",
    ),
    "history.date_order": (
        "終了日は開始日以降の日付を入力してください。",
        "The end date must not be before the start date.",
    ),
    "history.bad_number": (
        "電話番号は半角数字で入力してください(例: 0312345678)。",
        "Enter a phone number in digits (e.g. 0312345678).",
    ),
    "history.bad_extension": (
        "内線番号は4桁の半角数字で入力してください。",
        "An extension is 4 digits.",
    ),
    "history.bad_disposition": ("結果を一覧から選んでください。", "Pick a result from the list."),
    "history.call_title": ("通話の詳細", "Call details"),
    "history.trace": ("着信の経過", "How the call was routed"),
    "history.trace_lines": ("記録(原文)", "Trace (as recorded)"),
    "history.play": ("録音を再生", "Play the recording"),
    "history.download": ("録音をダウンロード(WAV)", "Download the recording (WAV)"),
    "history.back": ("通話履歴に戻る", "Back to the call history"),
    # --- issue #18: encrypted phones (tls2) ---
    "tls.device_encrypted": ("暗号化(TLS)", "Encrypted (TLS)"),
    "tls.device_encrypted_title": (
        "この端末の登録と通話の信号は TLS で暗号化されています",
        "This device's registration and call signalling are encrypted with TLS",
    ),
    "tls.device_clear": ("暗号化なし", "Not encrypted"),
    # --- end issue #18 ---
    # durable call records (issue 16): hang-up cause, ended-by side, each leg's SIP Call-ID
    "hangup.cause": ("終了理由", "Why it ended"),
    "hangup.ended_by": ("終了した側", "Ended by"),
    "hangup.caller_call_id": ("発信側SIP Call-ID", "Caller's SIP Call-ID"),
    "hangup.callee_call_id": ("着信側SIP Call-ID", "Callee's SIP Call-ID"),
    "hangup.unknown": ("不明", "Unknown"),
    "hangup.cause_normal": ("通常の終話", "Hung up normally"),
    "hangup.cause_cancelled": ("発信者が取り消し", "Cancelled by the caller"),
    "hangup.cause_busy": ("話中", "Busy"),
    "hangup.cause_no_answer": ("無応答", "No answer"),
    "hangup.cause_rejected": ("着信できず", "Not put through"),
    "hangup.cause_failed": ("エラー", "Failure"),
    "hangup.cause_rtp_timeout": ("音声が途絶えたため終了", "No audio (RTP inactivity)"),
    "hangup.cause_session_timer": ("セッションタイマー満了", "Session timer expired"),
    "hangup.cause_no_ack": ("応答確認(ACK)がないため終了", "No ACK for the answer"),
    "hangup.cause_shutdown": ("サーバー停止", "Server shutdown"),
    "hangup.cause_crash": ("サーバー異常終了(再起動時に記録)", "Server crash (closed at restart)"),
    "hangup.by_caller": ("発信者", "Caller"),
    "hangup.by_callee": ("着信者", "Callee"),
    "hangup.by_server": ("サーバー", "Server"),
}

WORDS: Mapping[Lang, Mapping[str, str]] = MappingProxyType(
    {
        "ja": MappingProxyType({key: pair[0] for key, pair in _PAIRS.items()}),
        "en": MappingProxyType({key: pair[1] for key, pair in _PAIRS.items()}),
    }
)


def pick_lang(value: str | None) -> Lang:
    """The language a cookie or query parameter asks for; Japanese unless it says English."""
    return "en" if value == "en" else "ja"


def translate(lang: Lang, key: str, **params: object) -> str:
    """The label ``key`` in ``lang``, with ``{name}`` fields filled in; unknown keys raise."""
    text = WORDS[lang][key]
    return text.format(**params) if params else text
