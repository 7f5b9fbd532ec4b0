//! The bench report: sections of figures, each figure with the goal it is held to where the
//! issue sets one, written as markdown, JSON and PNG plots under `target/bench/`.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::plot;

/// Everything one `cargo xtask bench` measured.
#[derive(Serialize, Default)]
pub struct Report {
    /// What ran it: kernel, CPUs, the build.
    pub machine: String,
    pub sections: Vec<Section>,
}

/// One kind of measurement: how it was taken, its figures and plots.
#[derive(Serialize, Default)]
pub struct Section {
    pub title: String,
    /// How the figures were measured, in a sentence or two.
    pub method: String,
    pub figures: Vec<Figure>,
    pub plots: Vec<Plot>,
    /// Findings: where the time goes, what was left out and why.
    pub notes: Vec<String>,
}

/// One measured value.
#[derive(Serialize, Clone, Debug)]
pub struct Figure {
    pub what: String,
    pub value: f64,
    pub unit: Unit,
    /// Context: a ratio to the floor, a comparison, a caveat.
    pub note: String,
    pub target: Option<Target>,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Ns,
    Ms,
    Seconds,
    /// Memory, in MiB.
    MiB,
    PacketsPerSec,
    ConnectionsPerSec,
    RequestsPerSec,
    /// Operations per second (control-plane updates).
    PerSec,
    /// A plain ratio.
    Times,
}

/// A goal the issue sets for a figure, and whether this run met it.
#[derive(Serialize, Clone, Debug)]
pub struct Target {
    pub goal: String,
    pub met: bool,
}

/// A chart written as `file` next to the report.
#[derive(Serialize, Clone, Debug)]
pub struct Plot {
    pub file: String,
    pub title: String,
    pub y_label: String,
    pub kind: PlotKind,
}

#[derive(Serialize, Clone, Debug)]
#[serde(rename_all = "snake_case")]
pub enum PlotKind {
    /// One bar per label, in the given order.
    Bars(Vec<(String, f64)>),
    /// Lines over a numeric x axis (logarithmic where `log_x`).
    Lines {
        x_label: String,
        log_x: bool,
        series: Vec<Series>,
    },
}

#[derive(Serialize, Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Figure {
    pub fn new(what: impl Into<String>, value: f64, unit: Unit) -> Self {
        Self {
            what: what.into(),
            value,
            unit,
            note: String::new(),
            target: None,
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// Holds the figure to `goal`, met or not as `met` says.
    pub fn target(mut self, goal: impl Into<String>, met: bool) -> Self {
        self.target = Some(Target {
            goal: goal.into(),
            met,
        });
        self
    }

    /// The value with its unit, scaled to read well.
    pub fn value_text(&self) -> String {
        let v = self.value;
        match self.unit {
            Unit::Ns if v >= 1e6 => format!("{:.2} ms", v / 1e6),
            Unit::Ns if v >= 1e4 => format!("{:.1} µs", v / 1e3),
            Unit::Ns => format!("{v:.0} ns"),
            Unit::Ms => format!("{v:.2} ms"),
            Unit::Seconds => format!("{v:.2} s"),
            Unit::MiB => format!("{v:.1} MiB"),
            Unit::PacketsPerSec => format!("{} pps", si(v)),
            Unit::ConnectionsPerSec => format!("{} conn/s", si(v)),
            Unit::RequestsPerSec => format!("{} req/s", si(v)),
            Unit::PerSec => format!("{}/s", si(v)),
            Unit::Times => format!("{v:.2}×"),
        }
    }
}

/// 1234567 → "1.23 M".
fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

impl Section {
    pub fn new(title: impl Into<String>, method: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            method: method.into(),
            ..Self::default()
        }
    }

    pub fn push(&mut self, figure: Figure) {
        println!(
            "  {:<70} {:>14}  {}",
            figure.what,
            figure.value_text(),
            figure.note
        );
        self.figures.push(figure);
    }
}

impl Report {
    /// Writes report.md, report.json and every plot into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for plot in self.sections.iter().flat_map(|s| &s.plots) {
            plot::draw(plot, &dir.join(&plot.file))
                .with_context(|| format!("drawing {}", plot.file))?;
        }
        std::fs::write(dir.join("report.md"), self.markdown()?)?;
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        Ok(())
    }

    pub fn markdown(&self) -> Result<String, std::fmt::Error> {
        let mut md = String::from("# lbctl benchmarks\n\n");
        writeln!(md, "{}\n", self.machine)?;
        let targets: Vec<&Figure> = self
            .sections
            .iter()
            .flat_map(|s| &s.figures)
            .filter(|f| f.target.is_some())
            .collect();
        if !targets.is_empty() {
            let met = targets
                .iter()
                .filter(|f| f.target.as_ref().is_some_and(|t| t.met))
                .count();
            writeln!(
                md,
                "## Targets: {met} of {} met\n\n| figure | value | goal | |\n| --- | ---: | --- | --- |",
                targets.len()
            )?;
            for f in &targets {
                let t = f.target.as_ref().expect("filtered on target");
                writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    f.what,
                    f.value_text(),
                    t.goal,
                    if t.met { "met" } else { "**missed**" }
                )?;
            }
            md.push('\n');
        }
        for s in &self.sections {
            writeln!(md, "## {}\n\n{}\n", s.title, s.method)?;
            if !s.figures.is_empty() {
                md.push_str("| what | value | | goal |\n| --- | ---: | --- | --- |\n");
                for f in &s.figures {
                    let goal = f.target.as_ref().map_or(String::new(), |t| {
                        format!("{} ({})", t.goal, if t.met { "met" } else { "**missed**" })
                    });
                    writeln!(
                        md,
                        "| {} | {} | {} | {goal} |",
                        f.what,
                        f.value_text(),
                        f.note
                    )?;
                }
                md.push('\n');
            }
            for p in &s.plots {
                writeln!(md, "![{}]({})\n", p.title, p.file)?;
            }
            for n in &s.notes {
                writeln!(md, "- {n}")?;
            }
            if !s.notes.is_empty() {
                md.push('\n');
            }
        }
        Ok(md)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missed_target_says_so_next_to_its_figure_and_in_the_summary() {
        let mut s = Section::new("per packet", "test run");
        s.push(Figure::new("dsr, established", 300.0, Unit::Ns).target("≤ 2.5× the floor", false));
        s.push(Figure::new("floor", 60.0, Unit::Ns));
        let r = Report {
            machine: "m".into(),
            sections: vec![s],
        };
        let md = r.markdown().unwrap();
        assert!(md.contains("## Targets: 0 of 1 met"), "{md}");
        assert!(
            md.contains("| dsr, established | 300 ns |  | ≤ 2.5× the floor (**missed**) |"),
            "{md}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["sections"][0]["figures"][0]["target"]["met"], false);
        assert_eq!(json["sections"][0]["figures"][1]["unit"], "ns");
    }

    #[test]
    fn values_read_in_their_unit() {
        assert_eq!(
            Figure::new("", 1_480_000.0, Unit::Ns).value_text(),
            "1.48 ms"
        );
        assert_eq!(
            Figure::new("", 2_500_000.0, Unit::PacketsPerSec).value_text(),
            "2.50 M pps"
        );
        assert_eq!(
            Figure::new("", 12_345.0, Unit::ConnectionsPerSec).value_text(),
            "12.3 k conn/s"
        );
    }
}
