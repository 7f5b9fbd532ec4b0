//! The report's PNG charts (plotters, bitmap backend, the DejaVu font from
//! fonts-dejavu-core, which `cargo xtask bench` installs).

use std::{path::Path, sync::Once};

use anyhow::{anyhow, bail, Result};
use plotters::{
    prelude::*,
    style::{register_font, FontStyle},
};

use super::report::{Plot, PlotKind};

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const SIZE: (u32, u32) = (1000, 560);

fn font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = std::fs::read(FONT)
            .map_err(|e| anyhow!("reading {FONT} ({e}): install fonts-dejavu-core"))
            .and_then(|bytes| {
                // plotters keeps registered fonts for the life of the process.
                register_font(
                    "sans-serif",
                    FontStyle::Normal,
                    Box::leak(bytes.into_boxed_slice()),
                )
                .map_err(|_| anyhow!("{FONT} is not a font plotters can read"))
            });
    });
    result
}

/// Draws `plot` into the PNG file `path`.
pub fn draw(plot: &Plot, path: &Path) -> Result<()> {
    font()?;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    match &plot.kind {
        PlotKind::Bars(bars) => bars_chart(&root, plot, bars),
        PlotKind::Lines {
            x_label,
            log_x,
            series,
        } => {
            if *log_x {
                lines_chart(&root, plot, x_label, series, true)
            } else {
                lines_chart(&root, plot, x_label, series, false)
            }
        }
    }?;
    root.present().map_err(|e| anyhow!("{e}"))
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn bars_chart(root: &Area, plot: &Plot, bars: &[(String, f64)]) -> Result<()> {
    if bars.is_empty() {
        bail!("no bars");
    }
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max) * 1.15;
    let labels: Vec<&str> = bars.iter().map(|b| b.0.as_str()).collect();
    let mut chart = ChartBuilder::on(root)
        .caption(&plot.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(260)
        .build_cartesian_2d(0.0..max.max(1.0), (0..bars.len()).into_segmented())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(&plot.y_label)
        .y_labels(bars.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).copied().unwrap_or("").to_string(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (*v, SegmentValue::Exact(i + 1)),
                ],
                BLUE.mix(0.6).filled(),
            );
            bar.set_margin(4, 4, 0, 0);
            bar
        }))
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            Text::new(
                format!("{v:.0}"),
                (*v, SegmentValue::CenterOf(i)),
                ("sans-serif", 13),
            )
        }))
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn lines_chart(
    root: &Area,
    plot: &Plot,
    x_label: &str,
    series: &[super::report::Series],
    log_x: bool,
) -> Result<()> {
    let points = series.iter().flat_map(|s| &s.points);
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        bail!("no points");
    }
    if x0 == x1 {
        x1 = x0 + 1.0;
    }
    let y_range = 0.0..(y1 * 1.15).max(1.0);
    let palette = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    macro_rules! draw_on {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(&plot.y_label)
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
            for (i, s) in series.iter().enumerate() {
                let color = palette[i % palette.len()];
                chart
                    .draw_series(LineSeries::new(
                        s.points.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| anyhow!("{e}"))?
                    .label(&s.name)
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| anyhow!("{e}"))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
        }};
    }
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(&plot.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80);
    if log_x {
        draw_on!(builder
            .build_cartesian_2d((x0..x1).log_scale(), y_range)
            .map_err(|e| anyhow!("{e}"))?);
    } else {
        draw_on!(builder
            .build_cartesian_2d(x0..x1, y_range)
            .map_err(|e| anyhow!("{e}"))?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Series;

    #[test]
    fn both_kinds_of_chart_are_written_as_png() {
        let dir = std::env::temp_dir().join(format!("lbctl-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bars = Plot {
            file: "bars.png".into(),
            title: "ns per packet".into(),
            y_label: "ns".into(),
            kind: PlotKind::Bars(vec![("floor".into(), 60.0), ("dsr".into(), 290.0)]),
        };
        let lines = Plot {
            file: "lines.png".into(),
            title: "scale".into(),
            y_label: "ns".into(),
            kind: PlotKind::Lines {
                x_label: "VIPs".into(),
                log_x: true,
                series: vec![Series {
                    name: "dsr".into(),
                    points: vec![(1.0, 290.0), (100.0, 300.0), (10_000.0, 310.0)],
                }],
            },
        };
        for p in [&bars, &lines] {
            let path = dir.join(&p.file);
            draw(p, &path).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{}", p.file);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
