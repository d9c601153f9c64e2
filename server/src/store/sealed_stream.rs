//! Files written as they are made (recordings), encrypted at rest: a magic
//! header, then records, each a 4-byte big-endian length and one piece
//! sealed by the keyring with associated data naming the object and the
//! piece's index (so pieces cannot be swapped, reordered or moved to
//! another file). Every piece is synced as it is appended; a crash leaves
//! at most a torn last record, which readers stop before.

use super::crypto::{Keyring, ReadError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

const MAGIC: &[u8; 4] = b"HSS1";
/// Largest piece accepted when reading (a torn length must not allocate
/// without bound).
const MAX_PIECE: usize = 64 << 20;

fn aad(object: &str, index: u64) -> Vec<u8> {
    format!("{object}#{index}").into_bytes()
}

/// Appends sealed pieces to a new file.
pub struct SealedWriter {
    file: std::fs::File,
    keys: Keyring,
    object: String,
    index: u64,
}

impl SealedWriter {
    /// Creates the file at `path` (it must not exist) for `object`.
    pub fn create(path: &Path, keys: Keyring, object: &str) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        file.write_all(MAGIC)?;
        file.sync_all()?;
        Ok(Self {
            file,
            keys,
            object: object.to_owned(),
            index: 0,
        })
    }

    /// Seals and appends `piece`, then syncs it to disk.
    pub fn append(&mut self, piece: &[u8]) -> io::Result<()> {
        let sealed = self.keys.seal(piece, &aad(&self.object, self.index));
        let len = u32::try_from(sealed.len()).map_err(io::Error::other)?;
        let mut record = Vec::with_capacity(4 + sealed.len());
        record.extend_from_slice(&len.to_be_bytes());
        record.extend_from_slice(&sealed);
        let end = self.file.stream_position()?;
        let written = self
            .file
            .write_all(&record)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // A full disk: give back what the torn record took (readers
            // would stop before it anyway); later appends start there.
            let _ = self.file.set_len(end);
            let _ = self.file.seek(SeekFrom::Start(end));
            return Err(e);
        }
        self.index += 1;
        Ok(())
    }
}

/// Reads the pieces of a sealed file back, in order.
pub struct SealedReader {
    file: io::BufReader<std::fs::File>,
    keys: Keyring,
    object: String,
    index: u64,
}

impl SealedReader {
    /// Reads from piece number `index`, whose record starts at `offset`
    /// (see [`index`]).
    pub fn open_at(
        path: &Path,
        keys: Keyring,
        object: &str,
        index: u64,
        offset: u64,
    ) -> Result<Self, ReadError> {
        let mut reader = Self::open(path, keys, object)?;
        reader.file.seek(SeekFrom::Start(offset))?;
        reader.index = index;
        Ok(reader)
    }

    pub fn open(path: &Path, keys: Keyring, object: &str) -> Result<Self, ReadError> {
        let mut file = io::BufReader::new(std::fs::File::open(path)?);
        let mut magic = [0u8; 4];
        file.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a sealed stream").into());
        }
        Ok(Self {
            file,
            keys,
            object: object.to_owned(),
            index: 0,
        })
    }

    /// The next piece; `None` at the end (or at a torn last record).
    pub fn next_piece(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        let mut len = [0u8; 4];
        if !read_full(&mut self.file, &mut len)? {
            return Ok(None);
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_PIECE {
            return Ok(None);
        }
        let mut sealed = vec![0u8; len];
        if !read_full(&mut self.file, &mut sealed)? {
            return Ok(None);
        }
        let piece = self.keys.open(&sealed, &aad(&self.object, self.index))?;
        self.index += 1;
        Ok(Some(piece))
    }
}

/// Where a piece is: its record's offset in the file, and its plaintext
/// length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceAt {
    pub offset: u64,
    pub len: u64,
}

/// The pieces of a sealed file, from the record headers alone (nothing
/// decrypted), up to a torn last record.
pub fn index(path: &Path) -> io::Result<Vec<PieceAt>> {
    let mut file = io::BufReader::new(std::fs::File::open(path)?);
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a sealed stream",
        ));
    }
    let size = file.get_ref().metadata()?.len();
    let mut offset = MAGIC.len() as u64;
    let mut pieces = Vec::new();
    loop {
        let mut head = [0u8; 4 + 5 + 255];
        let want = (size.saturating_sub(offset) as usize).min(head.len());
        if want < 4 || !read_full(&mut file, &mut head[..want])? {
            return Ok(pieces);
        }
        let sealed = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as u64;
        let end = offset + 4 + sealed;
        if end > size {
            return Ok(pieces); // torn
        }
        let len = Keyring::plaintext_len(&head[4..want], sealed as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a record is not sealed"))?;
        pieces.push(PieceAt {
            offset,
            len: len as u64,
        });
        offset = end;
        file.seek(SeekFrom::Start(offset))?;
    }
}

/// Fills `buf`; false when the file ends first (a torn record).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => return Ok(false),
            n => got += n,
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(dir: &Path) -> Keyring {
        Keyring::local(dir).unwrap()
    }

    fn read_all(path: &Path, keys: Keyring, object: &str) -> Result<Vec<Vec<u8>>, ReadError> {
        let mut r = SealedReader::open(path, keys, object)?;
        let mut out = vec![];
        while let Some(p) = r.next_piece()? {
            out.push(p);
        }
        Ok(out)
    }

    #[test]
    fn pieces_round_trip_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r/x.rec");
        let mut w = SealedWriter::create(&path, keys(dir.path()), "recording/x").unwrap();
        w.append(b"first piece of media").unwrap();
        w.append(b"second").unwrap();
        drop(w);
        let raw = std::fs::read(&path).unwrap();
        assert!(!raw.windows(5).any(|w| w == b"first"), "plaintext on disk");
        let all = read_all(&path, keys(dir.path()), "recording/x").unwrap();
        assert_eq!(
            all,
            vec![b"first piece of media".to_vec(), b"second".to_vec()]
        );
        // A crash mid-append: the torn record is not read.
        std::fs::write(&path, &raw[..raw.len() - 3]).unwrap();
        let all = read_all(&path, keys(dir.path()), "recording/x").unwrap();
        assert_eq!(all, vec![b"first piece of media".to_vec()]);
        // The index finds the pieces without decrypting them.
        let whole = index(&path).unwrap();
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].len, 20);
        std::fs::write(&path, &raw).unwrap();
        let both = index(&path).unwrap();
        assert_eq!(both.iter().map(|p| p.len).collect::<Vec<_>>(), vec![20, 6]);
        let mut second =
            SealedReader::open_at(&path, keys(dir.path()), "recording/x", 1, both[1].offset)
                .unwrap();
        assert_eq!(second.next_piece().unwrap().unwrap(), b"second");
        // Another object's name does not open it.
        assert!(read_all(&path, keys(dir.path()), "recording/y").is_err());
        assert!(SealedWriter::create(&path, keys(dir.path()), "recording/x").is_err());
    }
}
