#!/usr/bin/env bash
# Runs the tests kept #[ignore] because they reproduce a known limit (each says which in its
# #[ignore = "..."] reason and in ARCHITECTURE.md). They are expected to FAIL until the limit
# is lifted; once one passes, drop its #[ignore] so scripts/test.sh runs it.
#
#   scripts/known-limits.sh
set -uo pipefail
cd "$(dirname "$0")/.."
echo "known limits (expected to fail until lifted):"
cargo test --locked -p flashtrack --test it -- --ignored
rc=$?
if [ $rc -eq 0 ]; then
    echo "known-limits: every ignored test passes now: remove their #[ignore]"
else
    echo "known-limits: still failing, as expected (exit $rc)"
fi
