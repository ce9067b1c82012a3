#!/bin/sh
# Appends the event document pipehook passes on stdin to a JSON-lines file (default
# ./pipehook-events.jsonl). Handy as a first exec step to see what handlers receive.
set -eu
out="${1:-./pipehook-events.jsonl}"
doc="$(cat)"
printf '%s\n' "$doc" >> "$out"
echo "logged event ${PIPEHOOK_EVENT_ID:-?} for generation ${PIPEHOOK_GENERATION_ID:-?} (${PIPEHOOK_STATUS:-?}) to $out"
