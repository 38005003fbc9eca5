#!/usr/bin/env bash
# GitHub's published OpenAPI description and real webhook payloads, from the npm registry,
# into .cache/npm (once). Tests that need them fail with this hint when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/npm
if [[ -f $dest/node_modules/@octokit/openapi/package.json && -f $dest/node_modules/@octokit/webhooks-examples/package.json ]]; then
  exit 0
fi
command -v npm >/dev/null || { echo "npm is missing: apt-get install npm" >&2; exit 1; }
mkdir -p "$dest"
echo ">> fetching @octokit/openapi and @octokit/webhooks-examples from the npm registry"
npm install --silent --no-audit --no-fund --prefix "$dest" \
  @octokit/openapi@23.0.2 @octokit/webhooks-examples @octokit/webhooks-schemas >/dev/null
