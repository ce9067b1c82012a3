#!/bin/sh
# Makes a JPEG thumbnail next to the downloaded video (<video>.jpg) with ffmpeg: a preview, not
# an archive (the archive is the download step's file and sidecar).
# Without ffmpeg it fails loudly with exit 3 (list 3 in permanent_exit_codes: retrying will not
# install it), unless the step sets THUMBNAIL_OPTIONAL=1, which skips the thumbnail and succeeds.
set -eu
cat > /dev/null   # the event document; this step only needs PIPEHOOK_FILE
file="${PIPEHOOK_FILE:?run this after a download step}"
if ! command -v ffmpeg > /dev/null 2>&1; then
    if [ "${THUMBNAIL_OPTIONAL:-0}" = 1 ]; then
        echo "ffmpeg not installed: no thumbnail for $file (THUMBNAIL_OPTIONAL=1)"
        exit 0
    fi
    echo "ffmpeg is not installed (apt-get install ffmpeg), or set THUMBNAIL_OPTIONAL=1 to skip thumbnails" >&2
    exit 3
fi
out="${file%.*}.jpg"
ffmpeg -hide_banner -loglevel error -y -ss 1 -i "$file" -frames:v 1 -vf "scale=480:-2" "$out.tmp.jpg"
mv -f "$out.tmp.jpg" "$out"
echo "thumbnail $out"
