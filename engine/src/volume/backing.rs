//! Backing store of a volume: sparse file or region of a block device.
