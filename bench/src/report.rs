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

pub(crate) fn write(scenario: &str, figures: &[Figure]) -> std::io::Result<PathBuf> {
    let dir =
        PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned()))
            .join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{scenario}.json"));
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
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&serde_json::json!({ "figures": figures }))?,
    )?;
    Ok(path)
}

/// Resident set size of this process, in bytes.
pub(crate) fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
