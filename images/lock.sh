#!/usr/bin/env bash
# Compile the image locks: requirements-runtime.lock (runtime/pyproject.toml, bedrock extra:
# no kopf, no Kubernetes client), requirements-operator.lock and requirements-build.lock.
# Every version is the one requirements.lock pins (the versions the tests ran), and
# --exclude-newer fixes what anything not pinned there resolves to, so the output is
# reproducible: a test re-runs this into a temporary directory and compares.
#   images/lock.sh [OUT_DIR]    (default: images/)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-images}
uv=${UV:-$(command -v uv || echo "$HOME/.cache/kubeswarm/tools/bin/uv")}
export UV_PYTHON_DOWNLOADS=never UV_CACHE_DIR=${UV_CACHE_DIR:-$HOME/.cache/kubeswarm/uv}
EXCLUDE_NEWER=2026-12-01T00:00:00Z

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
# requirements.lock as plain pins (its "-e ./runtime" lines are the packages, not constraints).
grep -E '^[A-Za-z0-9_.-]+==' requirements.lock | sed 's/ .*//' >"$constraints"

compile() {
  "$uv" pip compile -q --python-version 3.11 --generate-hashes --no-header --exclude-newer "$EXCLUDE_NEWER" \
    --no-emit-package kubeswarm-runtime --no-emit-package kubeswarm-operator "$@"
}
compile runtime/pyproject.toml --extra bedrock -c "$constraints" -o "$out/requirements-runtime.lock"
compile images/requirements-operator.in -c "$constraints" -o "$out/requirements-operator.lock"
compile images/requirements-build.in -o "$out/requirements-build.lock"
# The constraints file is a temporary path: keep it out of the "via" comments.
sed -i "s|$constraints|requirements.lock|g" "$out"/requirements-*.lock
