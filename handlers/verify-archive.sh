#!/bin/sh
# Verifies archived videos against their pipehook sidecars (<video>.json, written by the
# download step): the file must exist and its SHA-256 and size must match the sidecar.
# Usage: handlers/verify-archive.sh ARCHIVE_DIR      (exit 0 when every video checks out)
# As a step (after download) it checks just the current file (PIPEHOOK_FILE is set) and exits 3
# on a mismatch: list 3 in permanent_exit_codes, since a retry reads the same bytes.
set -eu
check() {
    video="$1"; sidecar="$video.json"
    [ -f "$sidecar" ] || { echo "MISSING SIDECAR $video"; return 1; }
    want_sha=$(sed -n 's/.*"sha256":"\([0-9a-f]*\)".*/\1/p' "$sidecar")
    want_bytes=$(sed -n 's/.*"bytes":\([0-9]*\).*/\1/p' "$sidecar")
    have_sha=$(sha256sum "$video" | cut -d' ' -f1)
    have_bytes=$(wc -c < "$video" | tr -d ' ')
    if [ "$want_sha" = "$have_sha" ] && [ "$want_bytes" = "$have_bytes" ]; then
        echo "OK      $video"
    else
        echo "BAD     $video (sidecar sha256 $want_sha bytes $want_bytes, file sha256 $have_sha bytes $have_bytes)"
        return 1
    fi
}
if [ -n "${PIPEHOOK_FILE:-}" ]; then
    cat > /dev/null   # the event document; not needed here
    check "$PIPEHOOK_FILE" || exit 3
    exit 0
fi
dir="${1:?usage: verify-archive.sh ARCHIVE_DIR}"
status=0
find "$dir" -type f ! -name '*.json' ! -name '*.part' | sort | while read -r video; do
    check "$video" || echo fail >> "${TMPDIR:-/tmp}/pipehook-verify.$$"
done
[ ! -f "${TMPDIR:-/tmp}/pipehook-verify.$$" ] || { rm -f "${TMPDIR:-/tmp}/pipehook-verify.$$"; status=1; }
exit $status
