//! NBD server: the host path. `proto` is pure (encode/decode, no I/O).
