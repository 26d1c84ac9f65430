#!/usr/bin/env bash
# Downloads every Python package the app image needs into build/docker-wheels/,
# using this host's pip configuration (its indexes and certificates), so that an
# image build can install them without reaching a package index itself.
# Only for hosts whose containers cannot reach PyPI; a normal build does not
# need it (see docs/deploy-ec2.md).
set -euo pipefail
cd "$(dirname "$0")/../.."

PIP=${PIP:-.venv/bin/pip}
[ -x "$PIP" ] || PIP="python3 -m pip"
DEST=build/docker-wheels
IMAGE_PYTHON_VERSION=${IMAGE_PYTHON_VERSION:-3.11.2}
STAMP=$DEST/.complete

# Re-download only when the requirements changed since the last complete run.
if [ -f "$STAMP" ] && [ "$STAMP" -nt requirements.txt ] && [ "$STAMP" -nt requirements-nodeps.txt ]; then
  exit 0
fi
# The host's extra indexes may not hold every package; pip's notes about that are noise here.
pip_download() {
  $PIP download -q -d "$DEST" "$@" 2>&1 | { grep -v 'is ignored: it is neither' || true; } >&2
  return "${PIPESTATUS[0]}"
}

mkdir -p "$DEST"
rm -f "$STAMP"
echo "Downloading the image's Python packages into $DEST"
# Resolve for the image's interpreter (Debian 12's python3.11), not this host's: some current
# releases already require a later 3.11.x. Source-only packages (uWSGI, gpt-2-simple) are fetched
# as they are and built inside the image, without dependencies of their own to resolve.
grep -v -i -E '^(uwsgi)([=<>~! ]|$)' requirements.txt >"$DEST/.binary-requirements.txt"
pip_download --python-version "$IMAGE_PYTHON_VERSION" --only-binary=:all: \
  -r "$DEST/.binary-requirements.txt" setuptools wheel
pip_download --no-deps --no-binary=:all: \
  "$(grep -i -E '^uwsgi([=<>~! ]|$)' requirements.txt)" -r requirements-nodeps.txt
touch "$STAMP"
