#!/bin/sh
# Makes a JPEG thumbnail next to the downloaded video (<video>.jpg) with ffmpeg, when ffmpeg
# is installed; without ffmpeg it says so and succeeds, so the route does not dead-letter.
set -eu
cat > /dev/null   # the event document; this step only needs PIPEHOOK_FILE
file="${PIPEHOOK_FILE:?run this after a download step}"
if ! command -v ffmpeg > /dev/null 2>&1; then
    echo "ffmpeg not installed: no thumbnail for $file"
    exit 0
fi
out="${file%.*}.jpg"
ffmpeg -hide_banner -loglevel error -y -ss 1 -i "$file" -frames:v 1 -vf "scale=480:-2" "$out.tmp.jpg"
mv -f "$out.tmp.jpg" "$out"
echo "thumbnail $out"
