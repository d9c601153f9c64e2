//! Files under the data directory: encrypted at rest (see [`super::crypto`])
//! and written atomically — sealed bytes go to `tmp/`, are fsynced, then
//! renamed into `blobs/` (and the directory fsynced), so a crash leaves
//! either the whole file or none. Uploads are held in memory until commit,
//! so no plaintext ever reaches the disk. Files no record points to are
//! removed by [`FileStore::sweep`] at startup.

use super::crypto::Keyring;
pub use super::crypto::ReadError;
use super::sealed_stream::{PieceAt, SealedReader, SealedWriter};
use sha2::{Digest, Sha256};
use std::io;
use std::path::{Path, PathBuf};

/// The normalised portrait an avatar is animated from (PNG, encrypted).
pub const PORTRAIT_FILE: &str = "portrait.png";
/// The face found in it at enrollment (JSON, encrypted: biometric data).
pub const FACE_FILE: &str = "face.json";

#[derive(Debug, Clone)]
pub struct FileStore {
    tmp: PathBuf,
    avatars: PathBuf,
    recordings: PathBuf,
    keys: Keyring,
}

/// Associated data binding a sealed file to its object.
fn object_aad(avatar_id: &str, name: &str) -> Vec<u8> {
    format!("avatar/{avatar_id}/{name}").into_bytes()
}

impl FileStore {
    pub fn open(data_dir: &Path, keys: Keyring) -> io::Result<Self> {
        let tmp = data_dir.join("tmp");
        let avatars = data_dir.join("blobs").join("avatars");
        let recordings = data_dir.join("blobs").join("recordings");
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(&avatars)?;
        std::fs::create_dir_all(&recordings)?;
        Ok(Self {
            tmp,
            avatars,
            recordings,
            keys,
        })
    }

    fn recording_path(&self, recording_id: &str) -> PathBuf {
        self.recordings.join(format!("{recording_id}.rec"))
    }

    /// A new recording's file, encrypted piece by piece as it is written
    /// (blocking).
    pub fn create_recording(&self, recording_id: &str) -> io::Result<SealedWriter> {
        SealedWriter::create(
            &self.recording_path(recording_id),
            self.keys.clone(),
            &format!("recording/{recording_id}"),
        )
    }

    /// Reads a recording back, piece by piece (blocking).
    pub fn read_recording(&self, recording_id: &str) -> Result<SealedReader, ReadError> {
        SealedReader::open(
            &self.recording_path(recording_id),
            self.keys.clone(),
            &format!("recording/{recording_id}"),
        )
    }

    /// Reads a recording back from piece `index`, whose record starts at
    /// `offset` (see [`FileStore::recording_index`]) (blocking).
    pub fn read_recording_at(
        &self,
        recording_id: &str,
        index: u64,
        offset: u64,
    ) -> Result<SealedReader, ReadError> {
        SealedReader::open_at(
            &self.recording_path(recording_id),
            self.keys.clone(),
            &format!("recording/{recording_id}"),
            index,
            offset,
        )
    }

    /// Where each piece of a recording is, and its length (blocking).
    pub fn recording_index(&self, recording_id: &str) -> io::Result<Vec<PieceAt>> {
        super::sealed_stream::index(&self.recording_path(recording_id))
    }

    /// The keys files are sealed with (also for short-lived tokens).
    pub fn keyring(&self) -> &Keyring {
        &self.keys
    }

    /// Deletes recording files whose id is not in `known_recording_ids`,
    /// when last modified at least `min_age` ago; returns how many
    /// (blocking).
    pub fn sweep_recordings(
        &self,
        known_recording_ids: &[String],
        min_age: std::time::Duration,
    ) -> io::Result<usize> {
        let known: std::collections::HashSet<&str> =
            known_recording_ids.iter().map(String::as_str).collect();
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.recordings)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".rec").unwrap_or(&name);
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            let old_enough = min_age.is_zero() || age.is_some_and(|a| a >= min_age);
            if !known.contains(id) && old_enough {
                match std::fs::remove_file(entry.path()) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    r => {
                        r?;
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Removes the files of recordings whose records are gone; a file that
    /// cannot be removed now is logged and left for the next start's sweep.
    pub async fn remove_recordings(&self, ids: &[String]) {
        for id in ids {
            let files = self.clone();
            let id2 = id.clone();
            match tokio::task::spawn_blocking(move || files.remove_recording(&id2)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(recording = %id, error = %e, "recording file left on disk")
                }
                Err(e) => {
                    tracing::warn!(recording = %id, error = %e, "recording file left on disk")
                }
            }
        }
    }

    /// Removes a recording's file; false when there was none (blocking).
    pub fn remove_recording(&self, recording_id: &str) -> io::Result<bool> {
        match std::fs::remove_file(self.recording_path(recording_id)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Directory of one avatar's files.
    pub fn avatar_dir(&self, avatar_id: &str) -> PathBuf {
        self.avatars.join(avatar_id)
    }

    /// Starts an upload (kept in memory until committed).
    pub fn begin_upload(&self) -> Upload {
        Upload {
            bytes: Vec::new(),
            hasher: Sha256::new(),
        }
    }

    /// Encrypts a finished upload and stores it as `<avatar dir>/<name>`,
    /// durably.
    pub async fn commit_upload(
        &self,
        upload: Upload,
        avatar_id: &str,
        name: &str,
    ) -> io::Result<PathBuf> {
        self.write_avatar_file(avatar_id, name, &upload.bytes).await
    }

    /// Encrypts `plaintext` and stores it as `<avatar dir>/<name>`, durably.
    pub async fn write_avatar_file(
        &self,
        avatar_id: &str,
        name: &str,
        plaintext: &[u8],
    ) -> io::Result<PathBuf> {
        let sealed = self.keys.seal(plaintext, &object_aad(avatar_id, name));
        let dir = self.avatar_dir(avatar_id);
        let dest = dir.join(name);
        let tmp = self
            .tmp
            .join(format!("write-{}", uuid::Uuid::now_v7().simple()));
        let dest2 = dest.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            use std::io::Write;
            let result = (|| {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)?;
                f.write_all(&sealed)?;
                f.sync_all()?;
                std::fs::create_dir_all(&dir)?;
                std::fs::rename(&tmp, &dest2)?;
                sync_dir(&dir)?;
                if let Some(parent) = dir.parent() {
                    sync_dir(parent)?;
                }
                Ok(())
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result
        })
        .await
        .map_err(io::Error::other)??;
        Ok(dest)
    }

    /// Reads and decrypts `<avatar dir>/<name>` (blocking).
    pub fn read_avatar_file(&self, avatar_id: &str, name: &str) -> Result<Vec<u8>, ReadError> {
        let sealed = std::fs::read(self.avatar_dir(avatar_id).join(name))?;
        Ok(self.keys.open(&sealed, &object_aad(avatar_id, name))?)
    }

    /// Removes every file of an avatar and returns how many there were.
    /// Missing files are not an error.
    pub async fn remove_avatar(&self, avatar_id: &str) -> io::Result<usize> {
        let dir = self.avatar_dir(avatar_id);
        tokio::task::spawn_blocking(move || {
            let n = match std::fs::read_dir(&dir) {
                Ok(d) => d.count(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
            };
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
                r => r.map(|_| n),
            }
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Deletes leftover temporary files and avatar directories whose id is
    /// not in `known_avatar_ids`, when last modified at least `min_age` ago
    /// (another server sharing the directory may be writing younger ones).
    /// Returns (temporary, orphaned) counts.
    pub fn sweep(
        &self,
        known_avatar_ids: &[String],
        min_age: std::time::Duration,
    ) -> io::Result<(usize, usize)> {
        let old_enough = |e: &std::fs::DirEntry| -> bool {
            min_age.is_zero()
                || e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= min_age)
        };
        let mut tmp_removed = 0;
        for entry in std::fs::read_dir(&self.tmp)? {
            let entry = entry?;
            if !old_enough(&entry) {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                r => {
                    r?;
                    tmp_removed += 1;
                }
            }
        }
        let known: std::collections::HashSet<&str> =
            known_avatar_ids.iter().map(String::as_str).collect();
        let mut orphans = 0;
        for entry in std::fs::read_dir(&self.avatars)? {
            let entry = entry?;
            let name = entry.file_name();
            if !known.contains(name.to_string_lossy().as_ref()) && old_enough(&entry) {
                let p = entry.path();
                let r = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                match r {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    r => {
                        r?;
                        orphans += 1;
                    }
                }
            }
        }
        Ok((tmp_removed, orphans))
    }
}

const HEAD_LEN: usize = 16;

/// An upload being received, in memory (bounded by the caller's size limit).
pub struct Upload {
    bytes: Vec<u8>,
    hasher: Sha256,
}

impl Upload {
    pub fn write(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.bytes.extend_from_slice(chunk);
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The first bytes of the upload (for format checks).
    pub fn head(&self) -> &[u8] {
        &self.bytes[..self.bytes.len().min(HEAD_LEN)]
    }

    /// Everything received.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// SHA-256 of everything written, hex.
    pub fn sha256_hex(&self) -> String {
        let digest = self.hasher.clone().finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> FileStore {
        FileStore::open(dir, Keyring::local(dir).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn upload_commit_read_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let fs = store(dir.path());
        let mut up = fs.begin_upload();
        up.write(b"hello ");
        up.write(b"world");
        assert_eq!(up.len(), 11);
        assert_eq!(
            up.sha256_hex(),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        let p = fs.commit_upload(up, "av_1", "original").await.unwrap();
        let raw = std::fs::read(&p).unwrap();
        assert!(!raw.windows(5).any(|w| w == b"hello"), "stored encrypted");
        assert_eq!(
            fs.read_avatar_file("av_1", "original").unwrap(),
            b"hello world"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        // A sealed file moved to another object does not open.
        std::fs::create_dir_all(fs.avatar_dir("av_2")).unwrap();
        std::fs::copy(&p, fs.avatar_dir("av_2").join("original")).unwrap();
        assert!(matches!(
            fs.read_avatar_file("av_2", "original"),
            Err(ReadError::Crypto(_))
        ));
        fs.remove_avatar("av_1").await.unwrap();
        assert!(!p.exists());
        fs.remove_avatar("av_1").await.unwrap();
    }

    #[test]
    fn sweep_removes_orphans_only() {
        let dir = tempfile::tempdir().unwrap();
        let fs = store(dir.path());
        std::fs::create_dir_all(fs.avatar_dir("av_keep")).unwrap();
        std::fs::create_dir_all(fs.avatar_dir("av_gone")).unwrap();
        std::fs::write(dir.path().join("tmp").join("write-x"), b"x").unwrap();
        let (t, o) = fs
            .sweep(&["av_keep".to_string()], std::time::Duration::ZERO)
            .unwrap();
        assert_eq!((t, o), (1, 1));
        assert!(fs.avatar_dir("av_keep").exists());
        assert!(!fs.avatar_dir("av_gone").exists());
    }

    #[test]
    fn recordings_without_a_record_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let fs = store(dir.path());
        for id in ["rc_keep", "rc_gone"] {
            fs.create_recording(id).unwrap().append(b"piece").unwrap();
        }
        let hour = std::time::Duration::from_secs(3600);
        let known = ["rc_keep".to_string()];
        assert_eq!(fs.sweep_recordings(&known, hour).unwrap(), 0, "young");
        assert_eq!(
            fs.sweep_recordings(&known, std::time::Duration::ZERO)
                .unwrap(),
            1
        );
        assert!(fs.read_recording("rc_keep").is_ok());
        assert!(fs.read_recording("rc_gone").is_err());
    }

    #[test]
    fn shared_sweep_leaves_young_files() {
        let dir = tempfile::tempdir().unwrap();
        let fs = store(dir.path());
        std::fs::create_dir_all(fs.avatar_dir("av_new")).unwrap();
        std::fs::write(dir.path().join("tmp").join("write-y"), b"y").unwrap();
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(fs.sweep(&[], hour).unwrap(), (0, 0));
        assert!(fs.avatar_dir("av_new").exists());
        // Aged past the limit, they go.
        let old = std::time::SystemTime::now() - 2 * hour;
        for p in [
            fs.avatar_dir("av_new"),
            dir.path().join("tmp").join("write-y"),
        ] {
            std::fs::File::options()
                .write(true)
                .open(&p)
                .or_else(|_| std::fs::File::open(&p))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        assert_eq!(fs.sweep(&[], hour).unwrap(), (1, 1));
    }
}
