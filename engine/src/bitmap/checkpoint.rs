//! Bitmap checkpoints (next).
