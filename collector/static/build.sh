#!/bin/sh
# Rebuild tracker.min.js (served as GET /tracker.js) from tracker.js with terser:
#   npm install terser@5   (anywhere; set TERSER=path/to/node_modules/.bin/terser)
#   sh collector/static/build.sh
# The first line of the output carries the SHA-256 of the source; a unit test fails when they drift.
set -eu
cd "$(dirname "$0")"
TERSER="${TERSER:-npx --no-install terser}"
HASH=$(sha256sum tracker.js | cut -c1-64)
{
  printf '/*! closedloop tracker, source sha256:%s */\n' "$HASH"
  $TERSER tracker.js --compress passes=2 --mangle --comments false
} > tracker.min.js
printf 'tracker.min.js: %s bytes, %s gzipped\n' "$(wc -c < tracker.min.js)" "$(gzip -9c tracker.min.js | wc -c)"
