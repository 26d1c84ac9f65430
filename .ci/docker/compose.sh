#!/usr/bin/env bash
# docker-compose on the stack that compose-up.sh beside it started, with the same compose files.
# Usage: .ci/docker/compose.sh <docker-compose arguments>, e.g. `ps` or `logs -f app`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
source "$here/compose-files.sh"
exec docker-compose "$@"
