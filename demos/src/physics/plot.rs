//! The two pictures: the final state coloured by region, and per-region load per step.

use super::sim::{Particles, RoundRecord};
use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use std::path::Path;

fn region_color(r: usize) -> HSLColor {
    // Hues spread by the golden angle so neighbouring regions differ clearly.
    HSLColor((r as f64 * 0.618_033_988_75).fract(), 0.75, 0.45)
}

/// Picks one of a round's per-region load vectors.
type Pick = fn(&RoundRecord) -> &Vec<u64>;

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

/// Draws every particle at its final position, coloured by the region that owned it, with the
/// region borders as vertical lines.
pub fn state_png(
    path: &Path,
    p: &Particles,
    region: &[usize],
    borders: &[usize],
    l: f64,
    cell: f64,
    title: &str,
) -> Result<()> {
    let root = BitMapBackend::new(path, (900, 940)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0.0..l, 0.0..l)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .draw()
        .map_err(plot_err)?;
    let size = if p.len() > 20_000 { 1 } else { 2 };
    chart
        .draw_series(
            (0..p.len())
                .map(|i| Circle::new((p.x[i], p.y[i]), size, region_color(region[i]).filled())),
        )
        .map_err(plot_err)?;
    for &b in &borders[1..borders.len() - 1] {
        let x = b as f64 * cell;
        chart
            .draw_series(LineSeries::new([(x, 0.0), (x, l)], BLACK.stroke_width(1)))
            .map_err(plot_err)?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Plots load per region per step: left with equal-width regions (before balancing), right
/// with the borders the run used (after balancing, when it balanced).
pub fn work_png(
    path: &Path,
    rounds: &[RoundRecord],
    balanced_run: bool,
    (before, after): (f64, f64),
) -> Result<()> {
    let root = BitMapBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(600);
    let max = rounds
        .iter()
        .flat_map(|r| r.work.iter().chain(&r.work_equal))
        .copied()
        .max()
        .unwrap_or(1) as f64
        / 1e3;
    let regions = rounds.first().map_or(0, |r| r.work.len());
    let right_title = if balanced_run {
        format!("after: borders moved by load (imbalance {after:.2})")
    } else {
        format!("borders used, no balancing (imbalance {after:.2})")
    };
    let panels: [(_, String, Pick, SeriesLabelPosition); 2] = [
        (
            left,
            format!("before: equal-width regions (imbalance {before:.2})"),
            |r| &r.work_equal,
            SeriesLabelPosition::MiddleRight,
        ),
        (
            right,
            right_title,
            |r| &r.work,
            SeriesLabelPosition::UpperRight,
        ),
    ];
    for (area, title, pick, legend_at) in panels {
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0..rounds.len(), 0.0..max * 1.05)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("load per region (k pair evaluations)")
            .draw()
            .map_err(plot_err)?;
        for r in 0..regions {
            chart
                .draw_series(LineSeries::new(
                    rounds
                        .iter()
                        .enumerate()
                        .map(|(s, rec)| (s, pick(rec)[r] as f64 / 1e3)),
                    region_color(r).stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(format!("region {r}"))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], region_color(r).stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(legend_at)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
