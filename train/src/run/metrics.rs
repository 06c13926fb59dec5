//! The run's metric log, one JSON object per line (`metrics.jsonl`), and its loss-curve picture.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tensor::{Error, Result};

use crate::files::write_atomic;
use crate::plot::{self, Axis, Figure, Panel};

/// One line of `metrics.jsonl`: averages over the steps since the previous line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MetricLine {
    /// Steps taken when the line was written.
    pub step: u64,
    /// The training loss.
    pub loss: f64,
    /// The gradient norm before clipping.
    pub grad_norm: f64,
    /// The learning rate of the last step.
    pub lr: f64,
    /// Optimisation steps per second.
    pub steps_per_sec: f64,
    /// The loss's parts, unweighted, where it has more than one: each data stream's mean
    /// (`target`, `bank`) and each extra term (`consistency`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub terms: BTreeMap<String, f64>,
}

/// An append-only metric log.
pub struct MetricLog {
    path: PathBuf,
    file: File,
}

impl MetricLog {
    /// Opens `path` for a run that has taken `step` steps: lines beyond `step` (written after the
    /// checkpoint a resumed run starts from) are dropped, so the log has one line per step logged.
    pub fn open(path: &Path, step: u64) -> Result<MetricLog> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let kept: Vec<MetricLine> = read(path)?.into_iter().filter(|l| l.step <= step).collect();
        let mut text = String::new();
        for line in &kept {
            text += &serde_json::to_string(line).expect("plain JSON");
            text.push('\n');
        }
        write_atomic(path, text.as_bytes())?;
        let file = OpenOptions::new().append(true).open(path).map_err(io)?;
        Ok(MetricLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends a line (and flushes it, so a crash loses no logged line).
    pub fn write(&mut self, line: &MetricLine) -> Result<()> {
        let text = serde_json::to_string(line).expect("plain JSON") + "\n";
        self.file
            .write_all(text.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })
    }
}

/// The lines of a metric log (none if the file does not exist). A torn last line (a crash while
/// it was written) is skipped; a bad line elsewhere is an error naming it.
pub fn read(path: &Path) -> Result<Vec<MetricLine>> {
    let bytes = match crate::files::read_user_file(path, &tensor::limits::JSON_BYTES) {
        Ok(bytes) => bytes,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(vec![])
        }
        Err(e) => return Err(e),
    };
    let text = String::from_utf8(bytes).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        msg: format!("not UTF-8 text: {e}"),
    })?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(m) => out.push(m),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => {
                return Err(Error::Format {
                    path: path.to_path_buf(),
                    msg: format!("line {}: {e}", i + 1),
                })
            }
        }
    }
    Ok(out)
}

/// Draws loss against step (log scale) for one or more labelled logs, as a PNG: each series
/// faint as logged, and strong as a running mean over a twentieth of its lines.
pub fn plot_loss_curves(path: &Path, series: &[(&str, &[MetricLine])]) -> Result<()> {
    if series.iter().all(|(_, lines)| lines.is_empty()) {
        return Err(Error::msg(format!(
            "{}: no metric lines to plot",
            path.display()
        )));
    }
    let points: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(label, lines)| {
            (
                *label,
                lines.iter().map(|l| (l.step as f64, l.loss)).collect(),
            )
        })
        .collect();
    let panel = Panel::new("Training loss", Axis::new("step"), Axis::new("loss").log())
        .with(plot::smoothed_lines(&points, |n| n / 20));
    Figure::new(vec![panel]).save(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn line(step: u64) -> MetricLine {
        MetricLine {
            step,
            loss: 1.0 / step as f64,
            grad_norm: 1.0,
            lr: 1e-3,
            steps_per_sec: 10.0,
            terms: Default::default(),
        }
    }

    #[test]
    fn reopening_drops_lines_after_the_checkpoint_and_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("difftune-metrics-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        let mut log = MetricLog::open(&path, 0).unwrap();
        for s in [10, 20, 30] {
            log.write(&line(s)).unwrap();
        }
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"step\": 40, \"lo").unwrap();
        assert_eq!(read(&path).unwrap().len(), 3);
        MetricLog::open(&path, 20).unwrap();
        assert_eq!(read(&path).unwrap(), vec![line(10), line(20)]);
        plot_loss_curves(&dir.join("loss.png"), &[("a", &read(&path).unwrap())]).unwrap();
        assert!(dir.join("loss.png").exists());
        fs::remove_dir_all(dir).unwrap();
    }
}
