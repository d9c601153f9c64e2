//! Files under the data directory, written atomically: uploads stream into
//! `tmp/`, are fsynced, then renamed into `blobs/` (and the directory
//! fsynced), so a crash leaves either the whole file or none. Files no record
//! points to are removed by [`FileStore::sweep`] at startup.

use sha2::{Digest, Sha256};
use std::io;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone)]
pub struct FileStore {
    tmp: PathBuf,
    avatars: PathBuf,
}

impl FileStore {
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let tmp = data_dir.join("tmp");
        let avatars = data_dir.join("blobs").join("avatars");
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(&avatars)?;
        Ok(Self { tmp, avatars })
    }

    /// Directory of one avatar's files.
    pub fn avatar_dir(&self, avatar_id: &str) -> PathBuf {
        self.avatars.join(avatar_id)
    }

    /// Starts a streamed upload into a temporary file.
    pub async fn begin_upload(&self) -> io::Result<Upload> {
        let path = self
            .tmp
            .join(format!("upload-{}", uuid::Uuid::now_v7().simple()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        Ok(Upload {
            path,
            file: Some(file),
            hasher: Sha256::new(),
            len: 0,
            head: Vec::with_capacity(HEAD_LEN),
            done: false,
        })
    }

    /// Moves a finished upload to `<avatar dir>/<name>`, durably.
    pub async fn commit_upload(
        &self,
        mut upload: Upload,
        avatar_id: &str,
        name: &str,
    ) -> io::Result<PathBuf> {
        let mut file = upload.file.take().expect("upload not yet committed");
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        let dir = self.avatar_dir(avatar_id);
        let dest = dir.join(name);
        let src = upload.path.clone();
        let dest2 = dest.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            std::fs::rename(&src, &dest2)?;
            sync_dir(&dir)?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
            Ok(())
        })
        .await
        .map_err(io::Error::other)??;
        upload.done = true;
        Ok(dest)
    }

    /// Removes every file of an avatar. Missing files are not an error.
    pub async fn remove_avatar(&self, avatar_id: &str) -> io::Result<()> {
        match tokio::fs::remove_dir_all(self.avatar_dir(avatar_id)).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    /// Deletes leftover temporary files and avatar directories whose id is
    /// not in `known_avatar_ids`. Returns (temporary, orphaned) counts.
    pub fn sweep(&self, known_avatar_ids: &[String]) -> io::Result<(usize, usize)> {
        let mut tmp_removed = 0;
        for entry in std::fs::read_dir(&self.tmp)? {
            let entry = entry?;
            std::fs::remove_file(entry.path())?;
            tmp_removed += 1;
        }
        let known: std::collections::HashSet<&str> =
            known_avatar_ids.iter().map(String::as_str).collect();
        let mut orphans = 0;
        for entry in std::fs::read_dir(&self.avatars)? {
            let entry = entry?;
            let name = entry.file_name();
            if !known.contains(name.to_string_lossy().as_ref()) {
                let p = entry.path();
                if p.is_dir() {
                    std::fs::remove_dir_all(&p)?;
                } else {
                    std::fs::remove_file(&p)?;
                }
                orphans += 1;
            }
        }
        Ok((tmp_removed, orphans))
    }
}

const HEAD_LEN: usize = 16;

/// An upload being written. Dropping it without commit removes the file.
pub struct Upload {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    len: u64,
    head: Vec<u8>,
    done: bool,
}

impl Upload {
    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let file = self.file.as_mut().expect("upload not yet committed");
        file.write_all(chunk).await?;
        self.hasher.update(chunk);
        self.len += chunk.len() as u64;
        if self.head.len() < HEAD_LEN {
            let take = (HEAD_LEN - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        Ok(())
    }

    /// Where the upload is being written (for validation before commit).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes written bytes so that readers of [`Upload::path`] see them.
    pub async fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush().await,
            None => Ok(()),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first bytes of the upload (for format checks).
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// SHA-256 of everything written, hex.
    pub fn sha256_hex(&self) -> String {
        let digest = self.hasher.clone().finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: a leftover is also removed by the startup sweep.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upload_commit_and_abort() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FileStore::open(dir.path()).unwrap();
        let mut up = fs.begin_upload().await.unwrap();
        up.write(b"hello ").await.unwrap();
        up.write(b"world").await.unwrap();
        assert_eq!(up.len(), 11);
        assert_eq!(
            up.sha256_hex(),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        let p = fs.commit_upload(up, "av_1", "original").await.unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello world");

        let mut aborted = fs.begin_upload().await.unwrap();
        aborted.write(b"partial").await.unwrap();
        drop(aborted);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );

        fs.remove_avatar("av_1").await.unwrap();
        assert!(!p.exists());
        fs.remove_avatar("av_1").await.unwrap();
    }

    #[test]
    fn sweep_removes_orphans_only() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FileStore::open(dir.path()).unwrap();
        std::fs::create_dir_all(fs.avatar_dir("av_keep")).unwrap();
        std::fs::create_dir_all(fs.avatar_dir("av_gone")).unwrap();
        std::fs::write(dir.path().join("tmp").join("upload-x"), b"x").unwrap();
        let (t, o) = fs.sweep(&["av_keep".to_string()]).unwrap();
        assert_eq!((t, o), (1, 1));
        assert!(fs.avatar_dir("av_keep").exists());
        assert!(!fs.avatar_dir("av_gone").exists());
    }
}
