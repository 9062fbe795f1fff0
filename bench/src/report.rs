//! Figures and the JSON report.

use std::path::PathBuf;

/// One measured figure and the baseline it is compared with.
#[derive(Debug)]
pub(crate) struct Figure {
    pub(crate) name: String,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    pub(crate) baseline: String,
    pub(crate) baseline_value: f64,
}

impl Figure {
    pub(crate) fn new(
        name: &str,
        value: f64,
        unit: &'static str,
        baseline: &str,
        baseline_value: f64,
    ) -> Self {
        let figure = Self {
            name: name.to_owned(),
            value,
            unit,
            baseline: baseline.to_owned(),
            baseline_value,
        };
        eprintln!(
            "{:<28} {:>14.2} {:<8} baseline {:<28} {:>14.2}  ratio {:.3}",
            figure.name,
            figure.value,
            figure.unit,
            figure.baseline,
            figure.baseline_value,
            figure.ratio()
        );
        figure
    }

    pub(crate) fn ratio(&self) -> f64 {
        if self.baseline_value == 0.0 {
            0.0
        } else {
            self.value / self.baseline_value
        }
    }
}

/// `$CARGO_TARGET_DIR/<folder>` (or `target/<folder>`), created if missing.
fn target_folder(folder: &str) -> std::io::Result<PathBuf> {
    let dir =
        PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned()))
            .join(folder);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Writes `value` as pretty JSON to `target/<folder>/<name>.json`.
pub(crate) fn write_json(
    folder: &str,
    name: &str,
    value: &serde_json::Value,
) -> std::io::Result<PathBuf> {
    let path = target_folder(folder)?.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(value)?)?;
    Ok(path)
}

pub(crate) fn write(scenario: &str, figures: &[Figure]) -> std::io::Result<PathBuf> {
    let figures: Vec<_> = figures
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name,
                "value": f.value,
                "unit": f.unit,
                "baseline": f.baseline,
                "baseline_value": f.baseline_value,
                "ratio": f.ratio(),
            })
        })
        .collect();
    write_json(
        "bench",
        scenario,
        &serde_json::json!({ "figures": figures }),
    )
}

/// Resident set size of this process, in bytes.
pub(crate) fn rss_bytes() -> u64 {
    process_rss_bytes("self").unwrap_or(0)
}

/// Resident set size (`VmRSS` in `/proc/<pid>/status`) of a process, in bytes; `None`
/// when the process is gone. `pid` is a number or `self`.
pub(crate) fn process_rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
