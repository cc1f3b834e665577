"""Every label the panel shows exists in Japanese and English, and pages use only known labels."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pbx.panel.i18n import WORDS, pick_lang, translate

PANEL = Path(__file__).resolve().parents[2] / "pbx" / "panel"
# A literal key: t("users.title") or t('users.title'), not a prefix joined to a value.
_LITERAL_KEY = re.compile(r"""\bt\(\s*["']([a-z_]+\.[a-z_0-9]+)["']\s*[,)]""")
_TRANSLATE_KEY = re.compile(r"""translate\(\s*\w+,\s*["']([a-z_]+\.[a-z_0-9]+)["']""")
_FLASH_KEY = re.compile(r"""["']([a-z_]+\.[a-z_0-9]+)["']""")
# Keys built in templates from a prefix and a value ("role." + role, "users.forward_" + kind).
_DYNAMIC = {
    "role.": ("operator", "tenant_admin"),
    "users.forward_": ("busy", "no_answer", "offline"),
    # 着信設定 (templates/incoming.html)
    "incoming.day_": ("mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"),
    "incoming.hears_": ("ringing", "announcement"),
    "incoming.final_": ("480", "486"),
    "status.activity_": ("talking", "ringing"),  # live status
    "status.call_": ("ringing", "answered"),  # live status
}


def used_keys() -> set[str]:
    keys: set[str] = set()
    for template in (PANEL / "templates").glob("*.html"):
        keys |= set(_LITERAL_KEY.findall(template.read_text(encoding="utf-8")))
    app = (PANEL / "app.py").read_text(encoding="utf-8")
    keys |= set(_TRANSLATE_KEY.findall(app))
    keys |= {
        k
        for k in _FLASH_KEY.findall(app)
        if k.split(".")[0] in _prefixes() and not k.endswith(".html")
    }
    for prefix, values in _DYNAMIC.items():
        keys |= {prefix + value for value in values}
    return keys


def _prefixes() -> set[str]:
    return {key.split(".")[0] for key in WORDS["ja"]}


def test_every_label_has_japanese_and_english() -> None:
    assert WORDS["ja"].keys() == WORDS["en"].keys()
    for key in WORDS["ja"]:
        assert WORDS["ja"][key].strip(), key
        assert WORDS["en"][key].strip(), key
        fields_ja = set(re.findall(r"{(\w+)}", WORDS["ja"][key]))
        fields_en = set(re.findall(r"{(\w+)}", WORDS["en"][key]))
        assert fields_ja == fields_en, key


def test_every_label_a_page_uses_exists() -> None:
    missing = sorted(used_keys() - set(WORDS["ja"]))
    assert missing == []


def test_the_manuals_words_are_the_labels() -> None:
    ja = WORDS["ja"]
    for word in (
        "設定変更",
        "ご利用数変更",
        "最大ご利用内線ユーザーID数",
        "通話録音利用ユーザー数",
        "国際電話利用可否",
        "番号の決定",
        "ユーザー追加",
        "内線番号",
        "発信時通知番号",
        "通話録音",
        "転送設定",
        "ビジー時",
        "無応答時",
        "オフライン時",
    ):
        assert word in ja.values(), word


@pytest.mark.parametrize(("asked", "lang"), [(None, "ja"), ("en", "en"), ("ja", "ja"), ("x", "ja")])
def test_japanese_unless_english_is_asked_for(asked: str | None, lang: str) -> None:
    assert pick_lang(asked) == lang


def test_translate_fills_in_fields() -> None:
    assert translate("ja", "usage.users_used", used=2, max=3) == "内線ユーザー 2 / 3"
    assert translate("en", "usage.users_used", used=2, max=3) == "Extension users 2 / 3"
