#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k proto, scripts/test.sh tests/test_names.py).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]' \
  -e './runtime[firestore,gateway,id-token,testing,tracing]'

# Real-world protos for the corpus tests: every googleapis proto, from npm.
if [ ! -f .cache/node_modules/google-proto-files/google/example/library/v1/library.proto ]; then
  mkdir -p .cache
  npm install --silent --no-audit --no-fund --prefix .cache google-proto-files@6.0.1 >/dev/null
fi

# checkov (Terraform and Dockerfile policy scan) has many dependencies: its own environment.
if [ ! -x .cache/checkov-venv/bin/checkov ]; then
  python3 -m venv .cache/checkov-venv
  .cache/checkov-venv/bin/python -m pip install --quiet --disable-pip-version-check checkov
fi

# The Firestore emulator ships with the Google Cloud CLI and needs Java.
emulator=/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud_firestore_emulator
if [ ! -x "$emulator" ] && command -v gcloud >/dev/null; then
  gcloud components install cloud-firestore-emulator --quiet || true
fi
if ! command -v java >/dev/null && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless) || true
fi

# Several pytest workers (pytest-xdist): the suite mostly waits on servers, emulators and
# neurons' own test runs. Each test file runs on one worker (module fixtures are built once);
# each worker starts its own Firestore emulator when a test needs one. SCAFFOLD_WORKERS=0 (or
# `-n 0` in the arguments, which win) runs everything in one process.
workers=${SCAFFOLD_WORKERS:-3}
set +e
.venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: that is a broken suite, not a pass" >&2
  exit 1
fi
exit "$code"
