#!/usr/bin/env bash
# `npm test`: everything CI checks, in order, on a clean checkout. Needs nothing
# running: the jest harness starts its own redis-server / nats-server on free ports.
set -euo pipefail
cd "$(dirname "$0")/../.."

step() { printf '\n== %s\n' "$*"; }

step "install dependencies"
npm install --no-audit --no-fund

step "generated protobuf code is up to date"
node tools/proto/gen.mjs --check

step "lint (type-aware, module boundaries)"
# @nx/enforce-module-boundaries reads the cached project graph and silently
# skips itself when there is none (a fresh clone): compute it first, and fail
# if the rule still reports that it was skipped.
NX_DAEMON=false npx nx show projects >/dev/null
lint_out=$(npx eslint . --max-warnings=0 2>&1) || { printf '%s\n' "$lint_out"; exit 1; }
if grep -q "No cached ProjectGraph" <<<"$lint_out"; then
  printf '%s\n' "$lint_out"
  echo "module-boundary lint was skipped (no project graph)"
  exit 1
fi
printf '%s\n' "${lint_out:-lint ok}"

step "type-check"
npx tsc -p tsconfig.json --noEmit

step "build every app (esbuild bundles in dist/apps)"
NX_DAEMON=false npx nx run-many -t build --parallel=2 --outputStyle=static

step "tests (unit, integration, end-to-end) against harness-started Redis and NATS"
# Bounded so a hung test can never eat the whole CI budget; jest exits on its own.
timeout 3600 npx jest --config jest.config.cjs --maxWorkers=2
