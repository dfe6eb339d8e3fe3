//! A run's encoding read a range at a time wherever it is kept (a spool, a store, memory),
//! so a run of any size is checked, hashed and sent without being held whole.

use sha2::{Digest as _, Sha256};

/// Where a run's encoding is read from while it is sent, a range at a time, so a run of
/// any size is never held in memory whole. Reads may block (they run off the runtime).
pub trait RunBytes: Send + Sync + 'static {
    /// The length of the encoding.
    fn size(&self) -> u64;
    /// Reads `len` bytes at `offset`.
    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>>;
}

/// An encoding already in memory (a run relayed from a store, or in tests).
impl RunBytes for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let end = start
            .checked_add(len)
            .ok_or_else(|| std::io::Error::other("read past the end of the run"))?;
        self.get(start..end)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| std::io::Error::other("read past the end of the run"))
    }
}

/// Returns the lowercase hex SHA-256 of a run's encoding, read a chunk at a time.
pub fn sha256_of(source: &dyn RunBytes, chunk_bytes: usize) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let size = source.size();
    let mut offset = 0;
    while offset < size {
        let len = chunk_len(size, offset, chunk_bytes);
        hasher.update(source.read_at(offset, len)?);
        offset += len as u64;
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The length of the chunk at `offset` of a `size`-byte encoding cut in `chunk_bytes`.
pub fn chunk_len(size: u64, offset: u64, chunk_bytes: usize) -> usize {
    usize::try_from(size.saturating_sub(offset))
        .unwrap_or(usize::MAX)
        .min(chunk_bytes.max(1))
}

/// An encoding that is a stretch of a file (a period inside a bundle on removable media),
/// read where it lies rather than copied out first.
#[derive(Debug)]
pub struct FileRange {
    file: std::sync::Mutex<std::fs::File>,
    offset: u64,
    size: u64,
}

impl FileRange {
    /// The `size` bytes of `file` from `offset` on.
    pub fn new(file: std::fs::File, offset: u64, size: u64) -> Self {
        Self {
            file: std::sync::Mutex::new(file),
            offset,
            size,
        }
    }
}

impl RunBytes for FileRange {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        offset
            .checked_add(len as u64)
            .filter(|end| *end <= self.size)
            .ok_or_else(|| std::io::Error::other("read past the end of the range"))?;
        // A read is a seek and a read; the lock keeps another reader's seek out between.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.seek(SeekFrom::Start(self.offset + offset))?;
        let mut out = vec![0; len];
        file.read_exact(&mut out)?;
        Ok(out)
    }
}
