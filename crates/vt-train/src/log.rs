//! The run's JSON-lines log, its single record: one [`LogRecord`] per line, written by the
//! trainer and read back by [`read_log`] (reports, resume).
//!
//! ```text
//! {"kind":"step","step":10,"epoch":0,"loss":1.93,"lr":0.05,"images_per_sec":410.2}
//! {"kind":"epoch","step":15,"epoch":0,"train_loss":1.71,"lr":0.04,"train_images_per_sec":398.0}
//! {"kind":"eval","step":15,"epoch":0,"ema":false,"loss":1.52,"samples":24,"metrics":{"top1":62.5,"top5":100.0}}
//! ```

use crate::eval::{finite_or_null, EvalResult};
use candle_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogRecord {
    /// One optimizer step (every `log_every` steps): the batch's training loss.
    Step {
        step: u64,
        epoch: usize,
        loss: f64,
        lr: f64,
        images_per_sec: f64,
        /// The gradient's global L2 norm before clipping (logged when `grad_clip` is set).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grad_norm: Option<f64>,
    },
    /// The end of a training epoch: its sample-weighted mean training loss.
    Epoch {
        step: u64,
        epoch: usize,
        #[serde(with = "finite_or_null")]
        train_loss: f64,
        lr: f64,
        train_images_per_sec: f64,
        /// Seconds of the epoch's steps spent averaging gradients and losses over the ranks
        /// (data-parallel runs only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        all_reduce_seconds: Option<f64>,
    },
    /// The test evaluation after an epoch (of the EMA weights when `ema`).
    Eval {
        step: u64,
        epoch: usize,
        ema: bool,
        #[serde(flatten)]
        result: EvalResult,
    },
}

impl LogRecord {
    /// The optimizer steps done when the record was written.
    pub fn step(&self) -> u64 {
        match self {
            LogRecord::Step { step, .. }
            | LogRecord::Epoch { step, .. }
            | LogRecord::Eval { step, .. } => *step,
        }
    }
}

fn io(e: std::io::Error, what: &str, path: &Path) -> Error {
    Error::Io(e).context(format!("cannot {what} log {}", path.display()))
}

/// Every record of a log. A last line without its newline (a write cut short by a kill) is
/// skipped; any other line that is not a record is an error naming the line.
pub fn read_log(path: &Path) -> Result<Vec<LogRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| io(e, "read", path))?;
    Ok(parse(&text, path)?.into_iter().map(|(_, r)| r).collect())
}

/// The records of a log's text, each with its line.
fn parse<'a>(text: &'a str, path: &Path) -> Result<Vec<(&'a str, LogRecord)>> {
    let torn = !text.is_empty() && !text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(r) => records.push((*line, r)),
            Err(_) if torn && i + 1 == lines.len() => {}
            Err(e) => {
                return Err(Error::wrap(e).context(format!(
                    "{}:{}: not a log record",
                    path.display(),
                    i + 1
                )))
            }
        }
    }
    Ok(records)
}

/// Appends records, one flushed line each.
pub(crate) struct LogWriter {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl LogWriter {
    /// Opens the log; on resume (`keep_until_step`), keeps only the records up to the
    /// checkpoint's step, byte for byte (the later ones will be redone), otherwise starts it
    /// empty.
    pub fn open(path: &Path, keep_until_step: Option<u64>) -> Result<Self> {
        let old = match keep_until_step {
            Some(_) if path.exists() => {
                std::fs::read_to_string(path).map_err(|e| io(e, "read", path))?
            }
            _ => String::new(),
        };
        let mut kept = String::new();
        for (line, r) in parse(&old, path)? {
            if keep_until_step.is_some_and(|s| r.step() <= s) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        let mut file = std::fs::File::create(path).map_err(|e| io(e, "write", path))?;
        file.write_all(kept.as_bytes())
            .map_err(|e| io(e, "write", path))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn write(&mut self, record: &LogRecord) -> Result<()> {
        let line = serde_json::to_string(record).map_err(Error::wrap)?;
        writeln!(self.file, "{line}")
            .and_then(|()| self.file.flush())
            .map_err(|e| io(e, "write", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{MetricValue, MIOU, PER_CLASS_IOU};

    #[test]
    fn records_round_trip_and_torn_lines() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("vt-train-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("log.jsonl");
        let eval = EvalResult {
            loss: f64::NAN,
            samples: 4,
            metrics: [
                (MIOU.to_string(), MetricValue::Scalar(40.0)),
                (
                    PER_CLASS_IOU.to_string(),
                    MetricValue::PerClass(vec![Some(80.0), None]),
                ),
            ]
            .into(),
        };
        let records = vec![
            LogRecord::Step {
                step: 1,
                epoch: 0,
                loss: 0.5,
                lr: 0.1,
                images_per_sec: 10.0,
                grad_norm: Some(2.5),
            },
            LogRecord::Eval {
                step: 1,
                epoch: 0,
                ema: true,
                result: eval,
            },
        ];
        let mut w = LogWriter::open(&path, None)?;
        for r in &records {
            w.write(r)?;
        }
        let text = std::fs::read_to_string(&path)?;
        assert!(
            text.lines().nth(1).unwrap().starts_with(
                r#"{"kind":"eval","step":1,"epoch":0,"ema":true,"loss":null,"samples":4,"metrics":{"miou":40.0,"per_class_iou":[80.0,null]}}"#
            ),
            "{text}"
        );
        let back = read_log(&path)?;
        assert_eq!(back[0], records[0]);
        let LogRecord::Eval { result, .. } = &back[1] else {
            panic!("{back:?}")
        };
        assert!(result.loss.is_nan());
        assert_eq!(result.scalar(MIOU), Some(40.0));
        assert_eq!(
            result.per_class(PER_CLASS_IOU),
            Some(&[Some(80.0), None][..])
        );
        // a torn last line is dropped; a bad line elsewhere is an error naming it
        std::fs::write(&path, format!("{text}{{\"kind\":\"st"))?;
        assert_eq!(read_log(&path)?.len(), 2);
        // a resume keeps the records up to its step, byte for byte
        std::fs::write(&path, format!("{text}{{\"kind\":\"st"))?;
        drop(LogWriter::open(&path, Some(0))?);
        assert_eq!(std::fs::read_to_string(&path)?, "");
        std::fs::write(&path, format!("{text}{{\"kind\":\"st"))?;
        drop(LogWriter::open(&path, Some(1))?);
        assert_eq!(std::fs::read_to_string(&path)?, text);
        std::fs::write(&path, format!("{{\"kind\":\"nope\"}}\n{text}"))?;
        let err = read_log(&path).unwrap_err().to_string();
        assert!(err.contains("log.jsonl:1: not a log record"), "{err}");
        Ok(())
    }
}
