//! The one error type of vt-data. Every variant names the file (and the index or shape) a user
//! has to look at; the underlying cause is kept as the `source`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: missing directory or file ({what})")]
    Missing { path: PathBuf, what: String },
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("{path}: cannot decode image: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: crate::decode::DecodeError,
    },
    #[error("{path}: sample {index}: label {label} is outside the class range 0..{num_classes}")]
    Label {
        path: PathBuf,
        index: usize,
        label: usize,
        num_classes: usize,
    },
    #[error("{path}: {msg}")]
    Shape { path: PathBuf, msg: String },
    #[error("index {index} out of range for a data set of {len} samples ({source_name})")]
    Index {
        index: usize,
        len: usize,
        source_name: String,
    },
    #[error("{0}")]
    Config(String),
    #[error("transform {transform}: {msg}")]
    Transform {
        transform: &'static str,
        msg: String,
    },
    #[error("batch {batch}: {source}")]
    Tensor {
        batch: usize,
        #[source]
        source: candle_core::Error,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        DataError::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn missing(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        DataError::Missing {
            path: path.into(),
            what: what.into(),
        }
    }

    pub(crate) fn transform(transform: &'static str, msg: impl Into<String>) -> Self {
        DataError::Transform {
            transform,
            msg: msg.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, DataError>;
