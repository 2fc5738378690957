//! FlashCopy requests of one image (in progress).

use super::Image;
use crate::control::{Reply, Request};
use crate::error::{Error, ErrorKind, Result};

impl Image {
    pub fn flash_request(&mut self, req: Request, _now: i64) -> Result<Reply> {
        Err(Error::new(ErrorKind::Unsupported, self.id(), format!("{req:?} is not supported yet")))
    }
}
