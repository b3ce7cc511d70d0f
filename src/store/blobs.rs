//! Content-addressed blob files: message bodies and attachments, kept beside
//! the database because large values do not suit sled.
//!
//! Layout: `<store>/blobs/<first two hex digits>/<sha256 hex>`. All 256 shard
//! directories are created (and the `blobs` directory fsynced) when the store
//! opens, so writing a blob never creates a directory.
//!
//! Durability: [`BlobDir::put`] writes a temp file in the shard directory,
//! fsyncs it, renames it to its hash and fsyncs the shard directory before
//! returning. A caller writes the database entry that references a blob only
//! after `put` returned, so a durable reference always points to a durable,
//! complete file. A file whose name is a hash is therefore always whole;
//! identical bytes are stored once (a `put` of bytes already present does no
//! I/O beyond the `stat`).
//!
//! Ownership: this module only moves bytes. Which blobs are referenced, and
//! when an unreferenced file may be deleted, is decided by the backend's
//! refcounts (`b:` keys) under its write lock; temp files and unreferenced
//! files left by a crash are removed by the sweep at open.

use crate::engine::{BlobRef, Content, StoredAttachment, StoredContent};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of temp files (never a valid hash, so the sweep can tell them apart).
const TMP_PREFIX: &str = ".tmp.";

/// The blob directory of one store.
#[derive(Debug)]
pub(crate) struct BlobDir {
    root: PathBuf,
    tmp_counter: AtomicU64,
}

/// One file found by [`BlobDir::files`].
#[derive(Debug)]
pub(crate) enum BlobFile {
    /// A file named by a valid hash.
    Blob { sha256: String, path: PathBuf },
    /// A temp file or anything else that has no business there.
    Stray(PathBuf),
}

/// True for 64 lowercase hex digits: the only names ever turned into paths.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// fsync a directory so that entries created or renamed in it are durable.
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

impl BlobDir {
    /// Create `root` and its 256 shard directories if needed, durably.
    pub(crate) fn open(root: PathBuf) -> io::Result<BlobDir> {
        fs::create_dir_all(&root)?;
        let mut created = false;
        for i in 0..=255u8 {
            let shard = root.join(hex::encode([i]));
            match fs::create_dir(&shard) {
                Ok(()) => created = true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        if created {
            sync_dir(&root)?;
            if let Some(parent) = root.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(BlobDir {
            root,
            tmp_counter: AtomicU64::new(0),
        })
    }

    /// The file of a blob. `sha256` must have passed [`is_sha256_hex`].
    pub(crate) fn path(&self, sha256: &str) -> PathBuf {
        debug_assert!(is_sha256_hex(sha256));
        self.root.join(&sha256[..2]).join(sha256)
    }

    pub(crate) fn exists(&self, sha256: &str) -> bool {
        self.path(sha256).is_file()
    }

    /// Store `bytes` durably under their hash (see the module docs).
    #[cfg(test)]
    pub(crate) fn put(&self, bytes: &[u8]) -> io::Result<BlobRef> {
        let sha256 = sha256_hex(bytes);
        let blob = BlobRef {
            size: bytes.len() as u64,
            sha256,
        };
        self.put_known(&blob, bytes)?;
        Ok(blob)
    }

    /// Like [`put`](Self::put) with the hash already computed.
    pub(crate) fn put_known(&self, blob: &BlobRef, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(&blob.sha256);
        if path.is_file() {
            return Ok(());
        }
        let shard = path.parent().expect("blob paths have a shard directory");
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = shard.join(format!("{TMP_PREFIX}{}.{n}", std::process::id()));
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &path)?;
            sync_dir(shard)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Open a blob for reading; `None` when there is no such file.
    pub(crate) fn open_file(&self, sha256: &str) -> io::Result<Option<File>> {
        match File::open(self.path(sha256)) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Delete a blob file; a missing file is not an error. Not fsynced: a
    /// deletion lost in a crash leaves an unreferenced file, which the sweep
    /// at open removes.
    pub(crate) fn remove(&self, sha256: &str) -> io::Result<()> {
        match fs::remove_file(self.path(sha256)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Hash the file and compare with `blob`. `Ok(false)` when the file is
    /// missing or differs.
    pub(crate) fn verify(&self, blob: &BlobRef) -> io::Result<bool> {
        let Some(mut f) = self.open_file(&blob.sha256)? else {
            return Ok(false);
        };
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            h.update(&buf[..n]);
        }
        Ok(size == blob.size && hex::encode(h.finalize()) == blob.sha256)
    }

    /// Every file under the shard directories (for the sweep and the check).
    pub(crate) fn files(&self) -> io::Result<Vec<BlobFile>> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.root)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                out.push(BlobFile::Stray(shard.path()));
                continue;
            }
            let shard_name = shard.file_name();
            for f in fs::read_dir(shard.path())? {
                let f = f?;
                let name = f.file_name();
                match name.to_str() {
                    Some(n)
                        if is_sha256_hex(n)
                            && shard_name.to_str() == Some(&n[..2])
                            && f.file_type()?.is_file() =>
                    {
                        out.push(BlobFile::Blob {
                            sha256: n.to_string(),
                            path: f.path(),
                        })
                    }
                    _ => out.push(BlobFile::Stray(f.path())),
                }
            }
        }
        Ok(out)
    }
}

/// Write every part of `content` as a blob and describe where they are.
/// `register` sees each blob's hash before its file is written (so that
/// nothing deletes the file between the write and the capture's commit).
pub(crate) fn put_content(
    blobs: &BlobDir,
    content: &Content<'_>,
    register: &mut dyn FnMut(&str),
) -> io::Result<StoredContent> {
    let mut put = |bytes: &[u8]| -> io::Result<BlobRef> {
        let blob = BlobRef {
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        };
        register(&blob.sha256);
        blobs.put_known(&blob, bytes)?;
        Ok(blob)
    };
    let text = content.text.map(|t| put(t.as_bytes())).transpose()?;
    let html = content.html.map(|t| put(t.as_bytes())).transpose()?;
    let attachments = content
        .attachments
        .iter()
        .map(|a| {
            Ok(StoredAttachment {
                name: a.name.map(str::to_string),
                content_type: a.content_type.clone(),
                size: a.bytes.len() as u64,
                blob: put(a.bytes)?,
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok(StoredContent {
        text,
        html,
        attachments,
    })
}

/// The blobs a stored content references, with repetitions.
pub(crate) fn content_refs(content: &StoredContent) -> impl Iterator<Item = &BlobRef> {
    content
        .text
        .iter()
        .chain(content.html.iter())
        .chain(content.attachments.iter().map(|a| &a.blob))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_content_addressed_and_verifiable() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(dir.path().join("blobs")).unwrap();
        let a = blobs.put(b"hello").unwrap();
        let b = blobs.put(b"hello").unwrap();
        assert_eq!(a, b);
        assert!(is_sha256_hex(&a.sha256));
        assert!(blobs.verify(&a).unwrap());
        let files = blobs.files().unwrap();
        assert_eq!(files.len(), 1);
        blobs.remove(&a.sha256).unwrap();
        blobs.remove(&a.sha256).unwrap();
        assert!(!blobs.verify(&a).unwrap());
    }

    #[test]
    fn only_lowercase_hex_names_are_hashes() {
        assert!(is_sha256_hex(&sha256_hex(b"")));
        assert!(!is_sha256_hex("../../etc/passwd"));
        assert!(!is_sha256_hex(&"A".repeat(64)));
        assert!(!is_sha256_hex(&"a".repeat(63)));
    }
}
