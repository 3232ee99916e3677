//! # vt-hub
//!
//! The Hugging Face hub cache for vt, read in the cache's own layout (`models--ORG--NAME/`,
//! `datasets--ORG--NAME/`, each with `refs/`, `snapshots/<commit>/`, `blobs/`) through
//! hf-hub, honouring `HF_HUB_CACHE`, `HF_HOME` and `HF_HUB_OFFLINE`:
//!
//! * [`model_file`]: a file of a model repository (`model.safetensors` for `--pretrained`),
//!   from the cache without any network; when it is not cached and the hub is reachable (and
//!   not `HF_HUB_OFFLINE`), downloaded into the cache;
//! * [`open_dataset`]: a dataset repository's parquet shards (an image-bytes column and a
//!   label column, as `zalando-datasets/fashion_mnist`, `uoft-cs/cifar10` and `ylecun/mnist`
//!   store them), train / test splits from the file names, as a vt-data
//!   [`ClassificationData`](vt_data::ClassificationData);
//! * [`put_in_cache`], [`image_shard`]: files and parquet shards written in that layout (a
//!   model or data set copied to a machine without the network; the tests' caches).
//!
//! candle-datasets' hub helpers are not used: `from_hub` lists a repository over the network
//! (no offline listing), and its vision loaders fix the file names and panic on an undecodable
//! image. This crate builds on what they build on (hf-hub's cache and the parquet crate).

mod dataset;
mod write;

pub use dataset::open_dataset;
pub use write::{image_shard, put_in_cache, RepoKind, LOCAL_COMMIT};

use hf_hub::{HFClient, HFClientSync, HFError};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("`{0}` is not a hub repository id (ORG/NAME or ORG/NAME@REVISION)")]
    BadId(String),
    #[error("{repo}: `{file}` is not in the hub cache {cache} and {why}")]
    NotCached {
        repo: String,
        file: String,
        cache: PathBuf,
        why: String,
    },
    #[error("{repo}: no cached snapshot{} in the hub cache {cache}", revision.as_ref().map(|r| format!(" of revision `{r}`")).unwrap_or_default())]
    NoSnapshot {
        repo: String,
        revision: Option<String>,
        cache: PathBuf,
    },
    #[error("hub cache: {0}")]
    Hub(#[from] HFError),
    #[error("{path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error(transparent)]
    Data(#[from] vt_data::DataError),
}

pub type Result<T> = std::result::Result<T, HubError>;

/// `ORG/NAME[@REVISION]` of a hub repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoId {
    pub owner: String,
    pub name: String,
    pub revision: Option<String>,
}

impl std::str::FromStr for RepoId {
    type Err = HubError;
    fn from_str(s: &str) -> Result<Self> {
        let (id, revision) = match s.split_once('@') {
            Some((id, rev)) if !rev.is_empty() => (id, Some(rev.to_string())),
            Some(_) => return Err(HubError::BadId(s.into())),
            None => (s, None),
        };
        match id.split_once('/') {
            Some((o, n)) if !o.is_empty() && !n.is_empty() && !n.contains('/') => Ok(Self {
                owner: o.into(),
                name: n.into(),
                revision,
            }),
            _ => Err(HubError::BadId(s.into())),
        }
    }
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)?;
        if let Some(r) = &self.revision {
            write!(f, "@{r}")?;
        }
        Ok(())
    }
}

/// The cache directory hf-hub uses: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HF_HUB_CACHE") {
        return d.into();
    }
    let home = std::env::var_os("HF_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/huggingface")
        });
    home.join("hub")
}

/// `HF_HUB_OFFLINE` set to 1, true, yes or on.
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

fn client() -> Result<HFClientSync> {
    Ok(HFClient::builder().cache_dir(cache_dir()).build_sync()?)
}

/// The local path of `file` in model repository `repo`: from the cache (no network), else
/// downloaded when the hub may be reached.
pub fn model_file(repo: &RepoId, file: &str) -> Result<PathBuf> {
    let client = client()?;
    let handle = client.model(repo.owner.clone(), repo.name.clone());
    let request = handle
        .download_file()
        .filename(file)
        .maybe_revision(repo.revision.clone());
    let not_cached = |why: String| HubError::NotCached {
        repo: repo.to_string(),
        file: file.into(),
        cache: cache_dir(),
        why,
    };
    match request.clone().local_files_only(true).send() {
        Ok(p) => Ok(p),
        Err(HFError::LocalEntryNotFound { .. }) if offline() => {
            Err(not_cached("HF_HUB_OFFLINE is set".into()))
        }
        Err(HFError::LocalEntryNotFound { .. }) => request
            .send()
            .map_err(|e| not_cached(format!("downloading it failed: {e}"))),
        Err(e) => Err(e.into()),
    }
}

/// The files of the cached snapshot of dataset `repo` (its revision, else `main`, else the
/// only one cached), as `(path in the repository, local path)`.
fn dataset_snapshot(repo: &RepoId) -> Result<Vec<(String, PathBuf)>> {
    let info = client()?.scan_cache().send()?;
    let id = format!("{}/{}", repo.owner, repo.name);
    let none = || HubError::NoSnapshot {
        repo: repo.to_string(),
        revision: repo.revision.clone(),
        cache: info.cache_dir.clone(),
    };
    let cached = info
        .repos
        .iter()
        .find(|r| r.repo_type == "dataset" && r.repo_id == id)
        .ok_or_else(none)?;
    let wanted = repo.revision.as_deref().unwrap_or("main");
    let rev = cached
        .revisions
        .iter()
        .find(|r| r.commit_hash == wanted || r.refs.iter().any(|x| x == wanted))
        .or_else(|| {
            (repo.revision.is_none() && cached.revisions.len() == 1).then(|| &cached.revisions[0])
        })
        .ok_or_else(none)?;
    Ok(rev
        .files
        .iter()
        .map(|f| (f.file_name.clone(), f.file_path.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_parse_with_and_without_revision() {
        let r: RepoId = "timm/resnet50.a1_in1k@abc123".parse().unwrap();
        assert_eq!(
            (r.owner.as_str(), r.name.as_str(), r.revision.as_deref()),
            ("timm", "resnet50.a1_in1k", Some("abc123"))
        );
        assert_eq!(r.to_string(), "timm/resnet50.a1_in1k@abc123");
        for bad in ["resnet50", "a/b/c", "/x", "a/", "a/b@"] {
            assert!(bad.parse::<RepoId>().is_err(), "{bad}");
        }
    }
}
