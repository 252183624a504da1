#!/usr/bin/env bash
# `sam build` of template.yaml on a clean copy of the tracked files, then a
# check that each function has its bootstrap binary.
#
# SAM hashes the whole CodeUri (the workspace root) for its build cache; the
# working tree's target/ and .venv/ would make that slow and racy. The copy
# builds into target/sam of the working tree, so later runs are incremental.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
(cd "$root" && git ls-files -z | xargs -0 cp --parents -t "$src")

export PATH="$root/.venv/bin:$PATH" SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1
export CARGO_TARGET_DIR="$root/target/sam"
cd "$src"
"$root/.venv-sam/bin/sam" build --build-dir "$root/.aws-sam/build"

for function in PreProvisioningHookFunction EndpointFailoverFunction CertIssuerFunction; do
    binary="$root/.aws-sam/build/$function/bootstrap"
    test -x "$binary" || { echo "sam build made no $binary" >&2; exit 1; }
    echo "$function: $(du -h "$binary" | cut -f1) bootstrap"
done
