//! The one error type of vt-run. Each variant names the file or key to look at and keeps its
//! cause as the `source` (print the chain, e.g. anyhow's `{:#}`, to see it).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("cannot write the config as TOML")]
    ConfigWrite(#[from] toml::ser::Error),
    #[error("invalid {}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A run, config or checkpoint that cannot be used as asked (the message says why).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Data(Box<vt_data::DataError>),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Hub(#[from] vt_hub::HubError),
}

pub type Result<T> = std::result::Result<T, RunError>;

impl From<vt_data::DataError> for RunError {
    fn from(e: vt_data::DataError) -> Self {
        RunError::Data(Box::new(e))
    }
}

impl RunError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        RunError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// `bail!` for [`RunError::Invalid`].
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err($crate::error::RunError::Invalid(format!($($arg)*)))
    };
}
pub(crate) use invalid;
