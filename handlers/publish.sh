#!/bin/sh
# Example publish step: runs after a download step, with the event document on stdin.
# Copies (hard-links when possible) the archived video into $PUBLISH_DIR under its generation
# id, atomically, so whatever watches that folder never sees a half-written file.
# Exit 0 = published; exit 3 = permanent problem (list 3 in permanent_exit_codes);
# any other failure is retried by pipehook.
set -eu
: "${PUBLISH_DIR:?set PUBLISH_DIR in the step's env}"
file="${PIPEHOOK_FILE:-}"
if [ -z "$file" ] || [ ! -f "$file" ]; then
    echo "no downloaded file for $PIPEHOOK_GENERATION_ID (put a download step before this one)" >&2
    exit 3
fi
mkdir -p "$PUBLISH_DIR"
ext="${file##*.}"
target="$PUBLISH_DIR/$PIPEHOOK_GENERATION_ID.$ext"
tmp="$target.tmp.$$"
ln "$file" "$tmp" 2>/dev/null || cp "$file" "$tmp"
mv -f "$tmp" "$target"
echo "published $PIPEHOOK_GENERATION_ID to $target"
