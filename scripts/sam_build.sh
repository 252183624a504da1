#!/usr/bin/env bash
# `sam build` of both stacks on a clean copy of the tracked files, each into
# a build directory of its own, then a check that each function has its
# bootstrap binary:
#   template.yaml (regional) -> .aws-sam/build          (sam deploy's default)
#   global.yaml   (global)   -> .aws-sam/global/build   (samconfig env `global`)
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
sam="$root/.venv-sam/bin/sam"
cd "$src"

check() { # build dir, then the functions it must hold
    local dir=$1 function binary
    shift
    for function in "$@"; do
        binary="$dir/$function/bootstrap"
        test -x "$binary" || { echo "sam build made no $binary" >&2; exit 1; }
        echo "$function: $(du -h "$binary" | cut -f1) bootstrap"
    done
}

# The envs build for arm64 (samconfig.toml). Here they build for x86_64: this
# machine's Rust has no aarch64 standard library and rustup cannot fetch one
# offline. The command-line list replaces the env's whole list
# (aws-sam-cli#2380), so it repeats what else the build needs. (SAM builds
# every function whatever its Condition; PcaArn is given as a deploy would.)
arch=x86_64
pca=arn:aws:acm-pca:eu-central-1:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555

# SAM builds one function at a time (`cargo lambda build --release --bin X`),
# and a fat-LTO link uses one core. One cargo invocation builds the five
# binaries first, two links at a time; each of SAM's builds then finds its
# binary fresh: same command, same source copy, same target directory, and
# (crates/lambda-deps) the same features and LTO kind for every dependency.
"$root/.venv/bin/cargo-lambda" lambda build --release \
    --bin pre-provisioning-hook --bin cert-issuer --bin device-activation \
    --bin region-canary --bin endpoint-failover

# The regional stack, with env us-east-1's build settings.
"$sam" build --config-env us-east-1 --template-file template.yaml \
    --build-dir "$root/.aws-sam/build" \
    --parameter-overrides "Architecture=$arch PcaArn=$pca"
check "$root/.aws-sam/build" PreProvisioningHookFunction CertIssuerFunction DeviceActivationFunction RegionCanaryFunction

# The global stack, with env `global`'s (its template, Regions for the local
# Fn::ForEach expansion); a cache of its own, since a build prunes the cache
# entries it does not know.
"$sam" build --config-env global --template-file global.yaml \
    --build-dir "$root/.aws-sam/global/build" --cache-dir "$src/.aws-sam/global/cache" \
    --parameter-overrides "Architecture=$arch Regions=us-east-1,eu-west-1"
check "$root/.aws-sam/global/build" EndpointFailoverFunction
