//! Index arrays (CQR pointers, PQ/RQ codes) stored at the narrowest width that holds the range.

#[derive(Debug, Clone, PartialEq)]
pub enum PackedIndex {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
}

impl PackedIndex {
    /// An array of `len` zeros able to hold values `< range`.
    pub fn zeros(len: usize, range: usize) -> Self {
        if range <= 1 << 8 {
            PackedIndex::U8(vec![0; len])
        } else if range <= 1 << 16 {
            PackedIndex::U16(vec![0; len])
        } else {
            PackedIndex::U32(vec![0; len])
        }
    }
    pub fn from_values(values: &[u32], range: usize) -> Self {
        let mut p = Self::zeros(values.len(), range);
        for (i, &v) in values.iter().enumerate() {
            p.set(i, v);
        }
        p
    }
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        match self {
            PackedIndex::U8(v) => v[i] as u32,
            PackedIndex::U16(v) => v[i] as u32,
            PackedIndex::U32(v) => v[i],
        }
    }
    #[inline]
    pub fn set(&mut self, i: usize, x: u32) {
        match self {
            PackedIndex::U8(v) => v[i] = x as u8,
            PackedIndex::U16(v) => v[i] = x as u16,
            PackedIndex::U32(v) => v[i] = x,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            PackedIndex::U8(v) => v.len(),
            PackedIndex::U16(v) => v.len(),
            PackedIndex::U32(v) => v.len(),
        }
    }
    pub fn width_bytes(&self) -> u64 {
        match self {
            PackedIndex::U8(_) => 1,
            PackedIndex::U16(_) => 2,
            PackedIndex::U32(_) => 4,
        }
    }
    /// Bytes as stored.
    pub fn bytes(&self) -> u64 {
        self.len() as u64 * self.width_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn widths() {
        assert_eq!(PackedIndex::zeros(10, 256).bytes(), 10);
        assert_eq!(PackedIndex::zeros(10, 257).bytes(), 20);
        assert_eq!(PackedIndex::zeros(10, 70_000).bytes(), 40);
        let p = PackedIndex::from_values(&[1, 300, 65535], 65536);
        assert_eq!((p.get(0), p.get(1), p.get(2)), (1, 300, 65535));
    }
}
