#!/usr/bin/env bash
# Regenerate pbx/prompts/009608.wav, the after-hours announcement (時間外ガイダンス), with espeak-ng
# and sox (Debian packages espeak-ng, sox). Output: 8 kHz, mono, 16-bit signed PCM WAV.
# espeak-ng's Japanese voice reads kana only (kanji come out as "Chinese letter"), so the text is
# written in hiragana; the topic particle は is written わ so that it is spoken "wa".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/pbx/prompts/009608.wav}"

TEXT="おでんわ、ありがとう ございます。ただいまの じかんわ、えいぎょう じかんがい です。おそれいりますが、えいぎょう じかんないに、おかけなおし ください。"

for tool in espeak-ng sox; do
    command -v "$tool" >/dev/null || { echo "make_prompts.sh: $tool is not installed" >&2; exit 1; }
done
# Refuse text the voice cannot read: kanji would be spoken as "Chinese letter".
if espeak-ng -v ja -x -q "$TEXT" | grep -q "(en)"; then
    echo "make_prompts.sh: espeak-ng -v ja does not read the text as Japanese" >&2
    exit 1
fi

TMP="$(mktemp --suffix=.wav)"
trap 'rm -f "$TMP"' EXIT
# -s 140: a little slower than the default 175 words/min, for telephone listeners.
espeak-ng -v ja -s 140 -w "$TMP" "$TEXT"
# 22050 Hz -> 8 kHz mono 16-bit; -G guards against clipping; -D no dither (reproducible output); 0.3 s of
# silence before and after so the start is not clipped while the media path settles.
sox -G -D "$TMP" -r 8000 -c 1 -b 16 -e signed-integer "$OUT" pad 0.3 0.3
echo "wrote $OUT"
