//! A volume at run time: its geometry, its backing (sparse file or device region) and the
//! I/O engine. Host I/O enters here (the NBD server calls these methods); later issues put
//! the FlashCopy intercept in front of the data path.

pub mod backing;
