//! One array of a preprocessed dataset, held in memory or memory-mapped from the cache.
//!
//! A [`Column`] dereferences to a slice either way, so readers never ask where it lives. A mapped
//! column can give its pages back to the kernel ([`Column::release`]) once a window of rows has
//! been used: the out-of-core training loop does this so its resident memory stays bounded by a
//! window of batches, not by the data. Values are stored little-endian (the only byte order this
//! crate builds for), so a mapped file is read in place.

use std::fmt;
use std::fs::File;
use std::ops::{Deref, Range};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{DataError, Result};

#[cfg(target_endian = "big")]
compile_error!("cqr-data maps little-endian cache files in place; big-endian targets are not supported");

/// Plain fixed-width values that may be read from a mapped file in place.
///
/// # Safety
/// Every bit pattern of `size_of::<Self>()` bytes must be a valid value.
pub unsafe trait Plain: Copy + Default + PartialEq + fmt::Debug + Send + Sync + 'static {
    const NAME: &'static str;
}
unsafe impl Plain for u8 {
    const NAME: &'static str = "u8";
}
unsafe impl Plain for u32 {
    const NAME: &'static str = "u32";
}
unsafe impl Plain for f32 {
    const NAME: &'static str = "f32";
}

/// An array of `T`, owned or mapped read-only from a file.
#[derive(Clone)]
pub enum Column<T: Plain> {
    Owned(Vec<T>),
    Mapped(Arc<memmap2::Mmap>, std::marker::PhantomData<T>),
}

impl<T: Plain> Default for Column<T> {
    fn default() -> Self {
        Column::Owned(Vec::new())
    }
}

impl<T: Plain> From<Vec<T>> for Column<T> {
    fn from(v: Vec<T>) -> Self {
        Column::Owned(v)
    }
}

impl<T: Plain> Deref for Column<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Column::Owned(v) => v,
            Column::Mapped(m, _) => {
                let n = m.len() / std::mem::size_of::<T>();
                // SAFETY: the map is page-aligned (so aligned for T), holds n whole values (checked
                // at open), is read-only and lives as long as `self`; every bit pattern is a T.
                unsafe { std::slice::from_raw_parts(m.as_ptr().cast::<T>(), n) }
            }
        }
    }
}

impl<T: Plain> Column<T> {
    /// Maps `path` read-only; its length must be exactly `len` values.
    pub fn map(path: &Path, len: usize) -> Result<Self> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let bytes = file.metadata().map_err(|e| DataError::io(path, e))?.len();
        let want = (len * std::mem::size_of::<T>()) as u64;
        if bytes != want {
            return Err(DataError::Cache {
                path: path.into(),
                reason: format!(
                    "{bytes} bytes, expected {want} ({len} {} values): truncated or from another build",
                    T::NAME
                ),
            });
        }
        if len == 0 {
            return Ok(Column::Owned(Vec::new()));
        }
        // SAFETY: the cache files are written once (atomically renamed into place) and never
        // modified; a file changed under the map by someone else is outside this contract.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| DataError::io(path, e))?;
        Ok(Column::Mapped(Arc::new(map), std::marker::PhantomData))
    }

    /// Reads `path` (exactly `len` values) into memory.
    pub fn read(path: &Path, len: usize) -> Result<Self> {
        let mapped = Self::map(path, len)?;
        Ok(Column::Owned(mapped.to_vec()))
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self, Column::Mapped(..))
    }

    /// The owned vector, copying a mapped column into memory first.
    pub fn to_mut(&mut self) -> &mut Vec<T> {
        if let Column::Mapped(..) = self {
            *self = Column::Owned(self.to_vec());
        }
        match self {
            Column::Owned(v) => v,
            Column::Mapped(..) => unreachable!("converted above"),
        }
    }

    /// Gives the pages holding `elems` back to the kernel (mapped columns only; a no-op in
    /// memory). The data stays valid: a later read faults the pages in again from the file.
    pub fn release(&self, elems: Range<usize>) {
        let Column::Mapped(m, _) = self else { return };
        let size = std::mem::size_of::<T>();
        let page = page_size();
        // Only whole pages inside the range: a page shared with rows still in use stays.
        let start = (elems.start * size).div_ceil(page) * page;
        let end = ((elems.end * size).min(m.len()) / page) * page;
        if end > start {
            // Advice only: a failure changes memory use, never the values read.
            let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
        }
    }

    /// Bytes this column occupies (in memory or on disk).
    pub fn bytes(&self) -> usize {
        self.len() * std::mem::size_of::<T>()
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

impl<T: Plain> PartialEq for Column<T> {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl<T: Plain> fmt::Debug for Column<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = if self.is_mapped() { "mapped" } else { "owned" };
        write!(f, "Column<{}>({place}, {} values)", T::NAME, self.len())
    }
}

impl<T: Plain + Serialize> Serialize for Column<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self[..].serialize(s)
    }
}

impl<'de, T: Plain + Deserialize<'de>> Deserialize<'de> for Column<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Vec::<T>::deserialize(d).map(Column::Owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn mapped_equals_owned_and_survives_release() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.u32");
        let vals: Vec<u32> = (0..100_000u32).map(|i| i.wrapping_mul(2654435761)).collect();
        let mut f = File::create(&p).unwrap();
        for v in &vals {
            f.write_all(&v.to_le_bytes()).unwrap();
        }
        drop(f);
        let m = Column::<u32>::map(&p, vals.len()).unwrap();
        assert!(m.is_mapped());
        assert_eq!(&m[..], &vals[..]);
        m.release(0..vals.len());
        assert_eq!(&m[..], &vals[..], "released pages read back the same values");
        assert_eq!(Column::<u32>::read(&p, vals.len()).unwrap(), m);
    }

    #[test]
    fn wrong_length_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.f32");
        std::fs::write(&p, [0u8; 10]).unwrap();
        let err = Column::<f32>::map(&p, 3).unwrap_err().to_string();
        assert!(err.contains("10 bytes, expected 12"), "{err}");
    }
}
