#!/bin/sh
# Build the virtualenv an image runs, exactly as its Dockerfile stage does (the tests run
# this same script into a temporary directory):
#   images/install.sh runtime|operator VENV [WHEELS_DIR]
# 1. a throw-away build venv with the pinned build backend builds our wheels offline;
# 2. VENV gets the image's lock (hashes required) and our wheels, without dependencies,
#    so nothing unpinned can slip in; no pip, setuptools or build backend stays in it.
set -eu
target=$1
venv=$2
wheels=${3:-$(mktemp -d)}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
python=${PYTHON:-python3}

case $target in
  runtime) packages="runtime" ;;
  operator) packages="runtime operator" ;;
  *) echo "usage: $0 runtime|operator VENV [WHEELS_DIR]" >&2; exit 2 ;;
esac

builder=$(mktemp -d)
trap 'rm -rf "$builder"' EXIT
"$python" -m venv "$builder"
"$builder/bin/pip" install --quiet --no-deps --require-hashes -r "$here/requirements-build.lock"
for package in $packages; do
  "$builder/bin/pip" wheel --quiet --no-deps --no-build-isolation --wheel-dir "$wheels" "$repo/$package"
done

"$python" -m venv --without-pip "$venv"
"$builder/bin/pip" --python "$venv/bin/python" install --quiet --no-deps --require-hashes -r "$here/requirements-$target.lock"
for package in $packages; do
  "$builder/bin/pip" --python "$venv/bin/python" install --quiet --no-deps "$wheels"/kubeswarm_"$package"-*.whl
done
# Fails on a dependency the lock lacks or a version it pins wrong.
"$builder/bin/pip" --python "$venv/bin/python" check
