#!/usr/bin/env bash
# Long crash runs: kill -9 of flashd while hosts write to a FlashCopy source and target and
# copies run, N rounds (default 1000), then the same for volume commands.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-1000}
FLASHTRACK_KILL_ROUNDS=$rounds cargo test --release --locked -p flashtrack-cli --test cli -- --nocapture kill9
