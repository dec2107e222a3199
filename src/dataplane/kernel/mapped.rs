//! A `BPF_F_MMAPABLE` map's values mapped into the relay's memory, read and write, shared
//! with the program (or zeroed heap memory standing in for it in tests): the one owner of
//! such a mapping, which `dirs::Directions` and `keys::PortCells` read through.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

/// A mapping of `bytes` bytes, page aligned (the heap stand-in: 8-byte aligned), unmapped on
/// drop.
pub struct Mapped {
    base: NonNull<u8>,
    /// What `Drop` unmaps (0 for the heap stand-in).
    mapped_bytes: usize,
    /// The tests' stand-in memory, owned here and reached only through `base`.
    _heap: Option<Box<[u64]>>,
}

// SAFETY: the memory lives until `Drop` and is reached only through the raw pointer its
// users read and write with volatile or atomic accesses (each value has one writer in the
// relay), so the owner may move between and be shared by threads.
unsafe impl Send for Mapped {}
// SAFETY: as for Send.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps `bytes` of the map `fd`.
    pub fn map(fd: BorrowedFd<'_>, bytes: usize) -> std::io::Result<Mapped> {
        // SAFETY: a fresh shared mapping of the map's fd (BPF_F_MMAPABLE, checked by the
        // kernel, which refuses the call otherwise); no existing memory is touched, and the
        // result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(Mapped {
            base,
            mapped_bytes: bytes,
            _heap: None,
        })
    }

    /// `bytes` zeroed bytes on the heap, standing in for the kernel's (tests).
    #[cfg(test)]
    pub fn on_heap(bytes: usize) -> Mapped {
        let mut heap = vec![0u64; bytes.div_ceil(8)].into_boxed_slice();
        let base = NonNull::new(heap.as_mut_ptr().cast::<u8>()).unwrap_or(NonNull::dangling());
        Mapped {
            base,
            mapped_bytes: 0,
            _heap: Some(heap),
        }
    }

    /// The first byte, as a `T` pointer.
    pub fn base<T>(&self) -> NonNull<T> {
        self.base.cast::<T>()
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.mapped_bytes > 0 {
            // SAFETY: unmaps exactly the mapping `map` made; nothing uses it after Drop.
            unsafe { libc::munmap(self.base.as_ptr().cast(), self.mapped_bytes) };
        }
    }
}
