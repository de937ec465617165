//! The bytes of one simulated file: a `Vec` while small; past
//! `MAPPED_FROM` an anonymous mapping that grows with `mremap`, which moves
//! page tables instead of copying bytes. An archive database's log reaches
//! tens of megabytes at volume, and a `Vec` doubling under it copied the
//! whole log at every step and touched every copied page afresh (the
//! kernel zeroing each one first): a fifth of a run's CPU time once.
//! What the file holds is the same either way; only where it lives
//! differs.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Size from which a file's bytes live in their own mapping.
const MAPPED_FROM: usize = 1 << 20;

pub enum FileBytes {
    Small(Vec<u8>),
    Mapped(Mapping),
}

impl Default for FileBytes {
    fn default() -> FileBytes {
        FileBytes::Small(Vec::new())
    }
}

impl FileBytes {
    pub fn from_slice(data: &[u8]) -> FileBytes {
        let mut b = FileBytes::default();
        b.extend_from_slice(data);
        b
    }

    pub fn extend_from_slice(&mut self, data: &[u8]) {
        match self {
            FileBytes::Small(v) if v.len() + data.len() < MAPPED_FROM => v.extend_from_slice(data),
            FileBytes::Small(v) => {
                let mut m = Mapping::with_capacity(2 * (v.len() + data.len()));
                m.extend_from_slice(v);
                m.extend_from_slice(data);
                *self = FileBytes::Mapped(m);
            }
            FileBytes::Mapped(m) => m.extend_from_slice(data),
        }
    }

    pub fn truncate(&mut self, len: usize) {
        match self {
            FileBytes::Small(v) => v.truncate(len),
            FileBytes::Mapped(m) => m.len = m.len.min(len),
        }
    }
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Small(v) => v,
            FileBytes::Mapped(m) => m.as_slice(),
        }
    }
}

impl DerefMut for FileBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            FileBytes::Small(v) => v,
            FileBytes::Mapped(m) => m.as_mut_slice(),
        }
    }
}

/// An anonymous private mapping of `cap` bytes, the first `len` in use.
/// Untouched pages cost no memory; growing remaps without copying.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
}

// SAFETY: the mapping is owned by this value alone, like a `Vec`'s buffer.
unsafe impl Send for Mapping {}
// SAFETY: shared references only read.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn with_capacity(cap: usize) -> Mapping {
        let cap = page_round(cap);
        // SAFETY: a fresh anonymous mapping; no existing memory is named.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            panic!(
                "simulated disk: cannot map {cap} bytes: {}",
                std::io::Error::last_os_error()
            );
        }
        Mapping {
            ptr: NonNull::new(p.cast()).expect("mmap never returns null on success"),
            len: 0,
            cap,
        }
    }

    fn extend_from_slice(&mut self, data: &[u8]) {
        let need = self.len + data.len();
        if need > self.cap {
            let cap = page_round(need.max(2 * self.cap));
            // SAFETY: `ptr`/`cap` is our mapping; MAYMOVE lets the kernel
            // move it, after which only the returned address is used.
            let p = unsafe {
                libc::mremap(
                    self.ptr.as_ptr().cast(),
                    self.cap,
                    cap,
                    libc::MREMAP_MAYMOVE,
                )
            };
            if p == libc::MAP_FAILED {
                panic!(
                    "simulated disk: cannot grow a mapping to {cap} bytes: {}",
                    std::io::Error::last_os_error()
                );
            }
            self.ptr = NonNull::new(p.cast()).expect("mremap never returns null on success");
            self.cap = cap;
        }
        // SAFETY: `len + data.len() <= cap`, and `data` cannot lie inside
        // our mapping (no one else holds a pointer into it while we hold
        // `&mut self`).
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                data.len(),
            );
        }
        self.len = need;
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are mapped and initialised (written,
        // or zero as an anonymous mapping starts).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as `as_slice`, and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our mapping, unmapped once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.cap);
        }
    }
}

fn page_round(n: usize) -> usize {
    const PAGE: usize = 1 << 16;
    n.max(PAGE).div_ceil(PAGE) * PAGE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_past_the_mapping_threshold_keeping_every_byte() {
        let mut b = FileBytes::default();
        let mut expect = Vec::new();
        for i in 0..5000u32 {
            let chunk: Vec<u8> = (0..(i % 1500)).map(|j| (i ^ j) as u8).collect();
            b.extend_from_slice(&chunk);
            expect.extend_from_slice(&chunk);
        }
        assert!(matches!(b, FileBytes::Mapped(_)));
        assert_eq!(&b[..], &expect[..]);
        b.truncate(12345);
        b.extend_from_slice(b"tail");
        expect.truncate(12345);
        expect.extend_from_slice(b"tail");
        assert_eq!(&b[..], &expect[..]);
        b[3] ^= 0xff;
        expect[3] ^= 0xff;
        assert_eq!(b.to_vec(), expect);
    }
}
