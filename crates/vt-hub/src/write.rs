//! Writing into the hub cache's layout, for machines without the network (copy a model or a
//! dataset in as hf-hub would have stored it) and for tests.

use crate::{HubError, RepoId, Result};
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The commit [`put_in_cache`] files its snapshots under when the id names no revision.
pub const LOCAL_COMMIT: &str = "0000000000000000000000000000000000000000";

/// A model or a dataset repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoKind {
    Model,
    Dataset,
}

/// Stores `bytes` as `file` of `repo` in the cache at `cache` exactly as hf-hub does: the
/// content in `blobs/`, a symlink to it in `snapshots/<commit>/`, and `refs/main` naming the
/// commit (the id's revision when it is a 40-digit commit, else [`LOCAL_COMMIT`]).
pub fn put_in_cache(
    cache: &Path,
    kind: RepoKind,
    repo: &RepoId,
    file: &str,
    bytes: &[u8],
) -> Result<PathBuf> {
    let io = |path: &Path, e: std::io::Error| HubError::Format {
        path: path.into(),
        msg: format!("cannot write: {e}"),
    };
    let kind = match kind {
        RepoKind::Model => "models",
        RepoKind::Dataset => "datasets",
    };
    let dir = cache.join(format!("{kind}--{}--{}", repo.owner, repo.name));
    let commit = repo
        .revision
        .as_deref()
        .filter(|r| r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or(LOCAL_COMMIT);
    // a content address (not git's sha256, which a cache reader never checks)
    let hash = bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    let blob = dir
        .join("blobs")
        .join(format!("{hash:016x}{:08x}", bytes.len()));
    let link = dir.join("snapshots").join(commit).join(file);
    for d in [
        blob.parent().unwrap(),
        link.parent().unwrap(),
        &dir.join("refs"),
    ] {
        std::fs::create_dir_all(d).map_err(|e| io(d, e))?;
    }
    std::fs::write(&blob, bytes).map_err(|e| io(&blob, e))?;
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(&link).map_err(|e| io(&link, e))?;
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink(&blob, &link).map_err(|e| io(&link, e))?;
    #[cfg(not(unix))]
    std::fs::copy(&blob, &link).map_err(|e| io(&link, e))?;
    let main = dir.join("refs/main");
    std::fs::write(&main, commit).map_err(|e| io(&main, e))?;
    Ok(link)
}

/// A parquet shard as the `datasets` library writes image classification sets: a struct
/// column `image {bytes}` of encoded images and an INT64 column `label`.
pub fn image_shard(images: &[Vec<u8>], labels: &[i64]) -> Result<Vec<u8>> {
    let err = |source| HubError::Parquet {
        path: PathBuf::from("<new shard>"),
        source,
    };
    let schema = parse_message_type(
        "message schema { REQUIRED GROUP image { REQUIRED BYTE_ARRAY bytes; } REQUIRED INT64 label; }",
    )
    .map_err(err)?;
    let mut out = Vec::new();
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(&mut out, Arc::new(schema), props).map_err(err)?;
    let mut rg = writer.next_row_group().map_err(err)?;
    let bytes: Vec<ByteArray> = images.iter().map(|b| ByteArray::from(b.clone())).collect();
    let mut col = rg.next_column().map_err(err)?.expect("the image column");
    col.typed::<ByteArrayType>()
        .write_batch(&bytes, None, None)
        .map_err(err)?;
    col.close().map_err(err)?;
    let mut col = rg.next_column().map_err(err)?.expect("the label column");
    col.typed::<Int64Type>()
        .write_batch(labels, None, None)
        .map_err(err)?;
    col.close().map_err(err)?;
    rg.close().map_err(err)?;
    writer.close().map_err(err)?;
    Ok(out)
}
