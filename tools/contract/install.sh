#!/usr/bin/env bash
# Installs what the contract tests use, if it is not there yet: the npm packages of this folder
# (@redocly/cli, openapi-typescript, openapi-fetch, typescript; versions in package-lock.json) and the
# dotnet tools of .config/dotnet-tools.json (Kiota). Idempotent; the tests do the same when needed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ ! -f "$here/node_modules/.package-lock.json" ] || [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
  (cd "$here" && npm ci --no-audit --no-fund)
fi
(cd "$root" && dotnet tool restore >/dev/null)
