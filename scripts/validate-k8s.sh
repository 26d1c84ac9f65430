#!/usr/bin/env bash
# Validates the Kubernetes manifests offline: every resource that a kustomization in k8s/ lists,
# against the schemas of KUBERNETES_VERSION with kubernetes-validate (--strict: an unknown field
# is an error), then checkov's Kubernetes checks (skips only through the checkov.io/skip
# annotations, each explained beside it). --skip-download: checkov fetches nothing.
# Usage: scripts/validate-k8s.sh [DIR]   (k8s; the tools from build/k8s-venv, see make k8s-tools)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/k8s}"
tools="${K8S_VENV:-$root/build/k8s-venv}/bin"
version="${KUBERNETES_VERSION:-1.37.0}"

[ -x "$tools/checkov" ] || { echo "error: $tools/checkov is missing; run make k8s-tools" >&2; exit 1; }
mapfile -t manifests < <(find "$dir" -name '*.yaml' ! -name kustomization.yaml | sort)
"$tools/kubernetes-validate" --kubernetes-version "$version" --strict --quiet "${manifests[@]}"
echo "kubernetes-validate: ${#manifests[@]} files pass against Kubernetes $version"
"$tools/checkov" --directory "$dir" --framework kubernetes --skip-download --compact --quiet
