#!/usr/bin/env bash
# The whole test suite: unit tests, the engine and cli integration tests (golden DS CLI
# transcripts, flashd with real NBD clients, kill -9 rounds), on the io_uring backend and
# again on the pread/pwrite backend.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh || echo "test.sh: some test tools are missing; the tests that need them print why they skip" >&2
cargo build --workspace --locked
echo "== all tests, io backend chosen by the runtime probe (io_uring here)"
cargo test --workspace --locked
echo "== integration tests again on the pread/pwrite backend"
FLASHTRACK_IO=sync cargo test --locked -p flashtrack --test it
FLASHTRACK_IO=sync cargo test --locked -p flashtrack-cli --test cli
echo "== crash at every FlashCopy ordering point (flashd built with failpoints)"
cargo test --locked -p flashtrack-cli --features failpoints --test cli failpoint
echo "== engine recovery regressions at failpoints (one thread: they set FLASHTRACK_FAILPOINT)"
cargo test --locked -p flashtrack --features failpoints --test it fp_ -- --test-threads=1
