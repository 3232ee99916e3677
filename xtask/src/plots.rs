//! The report's SVG plots: curves with a band over seeds, accuracy against MACs in two panels
//! (ours, the paper's), and paired differences with their intervals against a zero line.

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// `(x, mean, low, high)` points of one model.
pub type Band = Vec<(f64, f64, f64, f64)>;

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

/// The range of `values`, padded by 5 % (or `min_pad`), a unit range when empty.
fn padded(values: impl Iterator<Item = f64>, min_pad: f64) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(min_pad);
    (lo - pad, hi + pad)
}

/// Moving average over `w` points, so step losses read as curves.
pub fn smooth(s: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    (0..s.len())
        .map(|i| {
            let win = &s[i.saturating_sub(w - 1)..=i];
            (
                s[i].0,
                win.iter().map(|p| p.1).sum::<f64>() / win.len() as f64,
            )
        })
        .collect()
}

/// Mean curves with a shaded band (mean ± std over seeds) per model; a one-point curve is
/// drawn as a point with a whisker.
pub fn band_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Band)],
) -> Result<()> {
    let (x0, x1) = padded(series.iter().flat_map(|(_, s)| s.iter().map(|p| p.0)), 0.5);
    let (y0, y1) = padded(
        series
            .iter()
            .flat_map(|(_, s)| s.iter().flat_map(|p| [p.2, p.3])),
        1e-3,
    );
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(err)?;
    for (i, (name, s)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut outline: Vec<(f64, f64)> = s.iter().map(|p| (p.0, p.3)).collect();
        outline.extend(s.iter().rev().map(|p| (p.0, p.2)));
        chart
            .draw_series(std::iter::once(Polygon::new(
                outline,
                color.mix(0.2).filled(),
            )))
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                s.iter().map(|p| (p.0, p.1)),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 15, y)], color.stroke_width(2))
            });
        if s.len() <= 30 {
            chart
                .draw_series(s.iter().map(|p| Circle::new((p.0, p.1), 3, color.filled())))
                .map_err(err)?;
            chart
                .draw_series(
                    s.iter().map(|p| {
                        PathElement::new(vec![(p.0, p.2), (p.0, p.3)], color.stroke_width(1))
                    }),
                )
                .map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present()
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

/// One labelled point with a vertical whisker `(x, y, y_low, y_high)`.
pub type Marked = (String, f64, f64, f64, f64);

fn scatter_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    y_label: &str,
    points: &[Marked],
) -> Result<()> {
    let (x0, x1) = padded(points.iter().map(|p| p.1), 1.0);
    let (y0, y1) = padded(points.iter().flat_map(|p| [p.3, p.4]), 0.5);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("MMACs")
        .y_desc(y_label)
        .draw()
        .map_err(err)?;
    for (i, (label, x, y, lo, hi)) in points.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series([PathElement::new(
                vec![(*x, *lo), (*x, *hi)],
                color.stroke_width(2),
            )])
            .map_err(err)?;
        chart
            .draw_series([Circle::new((*x, *y), 4, color.filled())])
            .map_err(err)?;
        chart
            .draw_series([Text::new(
                label.clone(),
                (*x, *y),
                ("sans-serif", 13).into_font(),
            )])
            .map_err(err)?;
    }
    Ok(())
}

/// Accuracy against MACs: ours (mean with ± std whiskers) on the left, the paper's ImageNet
/// figures on the right, each on its own axes.
pub fn accuracy_vs_macs(path: &Path, ours: &[Marked], paper: &[Marked]) -> Result<()> {
    let root = SVGBackend::new(path, (1100, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(560);
    scatter_panel(
        &left,
        "ours: test top-1 vs MMACs (mean ± std over seeds)",
        "top-1 %",
        ours,
    )?;
    scatter_panel(
        &right,
        "paper: ImageNet top-1 vs MMACs (224 px)",
        "top-1 %",
        paper,
    )?;
    root.present()
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

/// One comparison: label, our mean paired difference and its interval (`None`: one seed), the
/// paper's difference.
pub struct DiffPoint {
    pub label: String,
    pub ours: Option<(f64, f64, f64)>,
    pub paper: f64,
}

/// Paired differences, one row per comparison: our mean with its 95 % interval (whiskers),
/// the paper's difference (a cross), and the zero line.
pub fn paired_differences(path: &Path, title: &str, points: &[DiffPoint]) -> Result<()> {
    let values = points
        .iter()
        .flat_map(|p| {
            [
                Some(p.paper),
                p.ours.map(|o| o.1),
                p.ours.map(|o| o.2),
                Some(0.0),
            ]
        })
        .flatten();
    let (x0, x1) = padded(values, 0.5);
    let n = points.len().max(1);
    let root = SVGBackend::new(path, (900, 120 + 40 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let labels: Vec<String> = points.iter().map(|p| p.label.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(260)
        .build_cartesian_2d(x0..x1, -0.5..(n as f64 - 0.5))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(
            "difference in points (ours: mean and 95 % interval over paired seeds; x: the paper)",
        )
        .y_labels(n)
        .y_label_formatter(&|y| {
            let k = y.round();
            match (k - y).abs() < 1e-6 && k >= 0.0 {
                true => labels.get(k as usize).cloned().unwrap_or_default(),
                false => String::new(),
            }
        })
        .draw()
        .map_err(err)?;
    chart
        .draw_series([PathElement::new(
            vec![(0.0, -0.5), (0.0, n as f64 - 0.5)],
            BLACK.stroke_width(1),
        )])
        .map_err(err)?;
    let blue = Palette99::pick(0).to_rgba();
    for (k, p) in points.iter().enumerate() {
        let y = k as f64;
        if let Some((mean, lo, hi)) = p.ours {
            chart
                .draw_series([PathElement::new(
                    vec![(lo, y), (hi, y)],
                    blue.stroke_width(2),
                )])
                .map_err(err)?;
            chart
                .draw_series([Circle::new((mean, y), 4, blue.filled())])
                .map_err(err)?;
        }
        chart
            .draw_series([Cross::new((p.paper, y), 5, RED.stroke_width(2))])
            .map_err(err)?;
    }
    root.present()
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}
