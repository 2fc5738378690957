//! Heap buffers with a chosen alignment, for O_DIRECT I/O (block devices opened with
//! `O_DIRECT` reject buffers that are not aligned to the logical block size).
//!
//! The buffer is zero-initialised at allocation, so it can always be read as `&[u8]`.

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::OnceLock;

/// Alignment that satisfies every logical block size we meet (512 and 4096).
pub const DIRECT_ALIGN: usize = 4096;

/// Size of the shared zero buffer (and the chunk of zero-writing fallbacks).
pub const ZERO_CHUNK: usize = 1 << 20;

/// An owned, zero-initialised, aligned byte buffer.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    /// Bytes visible through Deref; the allocation (`layout.size()`) may be larger.
    len: usize,
    layout: Layout,
}

// SAFETY: AlignedBuf owns its allocation exclusively (like Vec<u8>); nothing is shared
// between values, so moving it to another thread is sound.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out `&[u8]`; mutation needs `&mut self`, so the usual
// borrow rules prevent data races (same reasoning as Vec<u8>).
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes whose start is aligned to `align`.
    ///
    /// Panics if `align` is not a power of two or the rounded size overflows `isize`: both
    /// are programming errors, not I/O conditions. Aborts on allocation failure like `Vec`.
    pub fn new(len: usize, align: usize) -> AlignedBuf {
        // The allocator must not see a zero-size layout: allocate at least one unit.
        let size = len.max(1).next_multiple_of(align.max(1));
        let layout = Layout::from_size_align(size, align).expect("aligned buffer: alignment must be a power of two");
        // SAFETY: layout.size() >= 1, as alloc_zeroed requires.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else { alloc::handle_alloc_error(layout) };
        AlignedBuf { ptr, len, layout }
    }

    /// The alignment of the start of the buffer.
    pub fn align(&self) -> usize {
        self.layout.align()
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr points to layout.size() >= len initialised (zeroed at allocation)
        // bytes owned by self, alive as long as the returned borrow of self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref; `&mut self` guarantees the slice is the only live borrow.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was returned by alloc_zeroed with exactly this layout and is freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf").field("len", &self.len).field("align", &self.layout.align()).finish()
    }
}

/// A process-wide, read-only, O_DIRECT-safe buffer of [`ZERO_CHUNK`] zero bytes, used by the
/// zero-writing fallbacks of punch-hole and zero-range.
pub fn zeroes() -> &'static [u8] {
    static ZEROES: OnceLock<AlignedBuf> = OnceLock::new();
    ZEROES.get_or_init(|| AlignedBuf::new(ZERO_CHUNK, DIRECT_ALIGN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        for (len, align) in [(0, 512), (1, 512), (4096, 4096), (5000, 4096), (70_000, 64)] {
            let mut b = AlignedBuf::new(len, align);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % align, 0);
            assert!(b.iter().all(|&x| x == 0));
            b.fill(7);
            assert!(b.iter().all(|&x| x == 7));
        }
    }

    #[test]
    fn shared_zeroes() {
        let z = zeroes();
        assert_eq!(z.len(), ZERO_CHUNK);
        assert_eq!(z.as_ptr() as usize % DIRECT_ALIGN, 0);
        assert!(z.iter().all(|&x| x == 0));
    }

    #[test]
    fn moves_between_threads() {
        let mut b = AlignedBuf::new(100, 4096);
        b[5] = 9;
        let b = std::thread::spawn(move || b).join().expect("thread");
        assert_eq!(b[5], 9);
        assert!(format!("{b:?}").contains("len: 100"));
    }
}
