//! PNG plots (plotters' bitmap backend with an embedded DejaVu Sans, so a plot needs no
//! system fonts): panels of curves or point clouds side by side ([`panels_png`]), and heat
//! maps of lattice-shaped or matrix-shaped values ([`grids_png`]).

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The font is embedded and known to be valid; a failure here only loses text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// How a curve is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Marks<'a> {
    /// A line through the points.
    #[default]
    Line,
    /// A dot per point.
    Dots,
    /// A dot per point with a vertical bar `y ± σ`, one `σ` per point.
    ErrorBars(&'a [f64]),
}

/// One curve.
pub struct Curve<'a> {
    /// Legend.
    pub label: &'a str,
    /// Points `(x, y)`; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
    /// Colour.
    pub color: RGBColor,
    /// Line or dots.
    pub marks: Marks<'a>,
}

/// One panel: a title, an x label and curves sharing a y axis.
pub struct Panel<'a> {
    /// Title above the panel.
    pub title: &'a str,
    /// Label of the x axis.
    pub x_label: &'a str,
    /// The curves.
    pub curves: Vec<Curve<'a>>,
    /// Fixed y range (else from the data).
    pub y_range: Option<(f64, f64)>,
}

/// Draws panels side by side into a PNG at `path` (written to a temporary file, then
/// renamed).
pub fn panels_png(path: &Path, panels: &[Panel]) -> Result<()> {
    register_font();
    let tmp = path.with_extension("tmp.png");
    {
        let width = 520 * panels.len().max(1) as u32;
        let root = BitMapBackend::new(&tmp, (width, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (panel, area) in panels.iter().zip(areas.iter()) {
            draw_panel(area, panel)?;
        }
        root.present()
            .map_err(|e| anyhow!("plot {}: {e}", path.display()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| anyhow!("plot {}: {e}", path.display()))?;
    Ok(())
}

fn draw_panel(area: &DrawingArea<BitMapBackend, plotters::coord::Shift>, p: &Panel) -> Result<()> {
    let pts = || {
        p.curves
            .iter()
            .flat_map(|c| c.points.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts() {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    for c in &p.curves {
        if let Marks::ErrorBars(errors) = c.marks {
            for (&(_, y), &e) in c.points.iter().zip(errors) {
                if y.is_finite() && e.is_finite() {
                    y0 = y0.min(y - e);
                    y1 = y1.max(y + e);
                }
            }
        }
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if let Some((a, b)) = p.y_range {
        (y0, y1) = (a, b);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        let pad = y0.abs().max(1.0) * 0.05;
        (y0, y1) = (y0 - pad, y1 + pad);
    } else if p.y_range.is_none() {
        let pad = (y1 - y0) * 0.05;
        (y0, y1) = (y0 - pad, y1 + pad);
    }
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("plot: {e}");
    let mut chart = ChartBuilder::on(area)
        .caption(p.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(p.x_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    for c in &p.curves {
        let color = c.color;
        let points: Vec<(f64, f64)> = c
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| (x, y.clamp(y0, y1)))
            .collect();
        match c.marks {
            Marks::Line => chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(err)?
                .label(c.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color)),
            Marks::Dots => chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 2, color.mix(0.6).filled())),
                )
                .map_err(err)?
                .label(c.label)
                .legend(move |(x, y)| Circle::new((x + 10, y), 3, color.filled())),
            Marks::ErrorBars(errors) => {
                let bars: Vec<((f64, f64), f64)> = c
                    .points
                    .iter()
                    .zip(errors)
                    .filter(|((x, y), e)| x.is_finite() && y.is_finite() && e.is_finite())
                    .map(|(&p, &e)| (p, e))
                    .collect();
                chart
                    .draw_series(bars.iter().map(|&((x, y), e)| {
                        PathElement::new(
                            vec![(x, (y - e).clamp(y0, y1)), (x, (y + e).clamp(y0, y1))],
                            color.stroke_width(2),
                        )
                    }))
                    .map_err(err)?;
                chart
                    .draw_series(
                        bars.into_iter().map(|((x, y), _)| {
                            Circle::new((x, y.clamp(y0, y1)), 3, color.filled())
                        }),
                    )
                    .map_err(err)?
                    .label(c.label)
                    .legend(move |(x, y)| Circle::new((x + 10, y), 3, color.filled()))
            }
        };
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    Ok(())
}

/// A heat map: `rows × cols` values, row-major (`NaN`: blank).
pub struct Grid {
    /// Title above it.
    pub title: String,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Values.
    pub values: Vec<f64>,
    /// Diverging colours around 0 (blue < 0 < red); otherwise white → dark blue over the
    /// range.
    pub diverging: bool,
}

/// The colour of `t ∈ [0, 1]` (sequential) or `t ∈ [−1, 1]` (diverging).
fn colour(t: f64, diverging: bool) -> RGBColor {
    let lerp = |a: (f64, f64, f64), b: (f64, f64, f64), s: f64| {
        RGBColor(
            (a.0 + (b.0 - a.0) * s) as u8,
            (a.1 + (b.1 - a.1) * s) as u8,
            (a.2 + (b.2 - a.2) * s) as u8,
        )
    };
    let white = (255.0, 255.0, 255.0);
    if diverging {
        let t = t.clamp(-1.0, 1.0);
        if t < 0.0 {
            lerp(white, (33.0, 102.0, 172.0), -t)
        } else {
            lerp(white, (178.0, 24.0, 43.0), t)
        }
    } else {
        lerp(white, (8.0, 48.0, 107.0), t.clamp(0.0, 1.0))
    }
}

/// Draws heat maps in a grid of `columns` per row into a PNG at `path`, each with its own
/// colour scale, whose range is appended to its title.
pub fn grids_png(path: &Path, grids: &[Grid], columns: usize) -> Result<()> {
    register_font();
    let columns = columns.clamp(1, grids.len().max(1));
    let rows = grids.len().div_ceil(columns).max(1);
    let tmp = path.with_extension("tmp.png");
    {
        let root =
            BitMapBackend::new(&tmp, (300 * columns as u32, 320 * rows as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
        let areas = root.split_evenly((rows, columns));
        for (g, area) in grids.iter().zip(areas.iter()) {
            let finite = g.values.iter().filter(|v| v.is_finite());
            let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
            let scale = if g.diverging {
                lo.abs().max(hi.abs()).max(1e-300)
            } else {
                (hi - lo).max(1e-300)
            };
            let err = |e: DrawingAreaErrorKind<_>| anyhow!("plot: {e}");
            let title = if lo.is_finite() {
                format!("{}  [{lo:.3} … {hi:.3}]", g.title)
            } else {
                g.title.clone()
            };
            let mut chart = ChartBuilder::on(area)
                .caption(&title, ("sans-serif", 13))
                .margin(8)
                .build_cartesian_2d(0..g.cols, 0..g.rows)
                .map_err(err)?;
            chart
                .draw_series(
                    (0..g.rows)
                        .flat_map(|r| (0..g.cols).map(move |c| (r, c)))
                        .map(|(r, c)| {
                            let v = g.values[r * g.cols + c];
                            let fill = if !v.is_finite() {
                                RGBColor(230, 230, 230)
                            } else if g.diverging {
                                colour(v / scale, true)
                            } else {
                                colour((v - lo) / scale, false)
                            };
                            // row 0 at the top
                            let y = g.rows - 1 - r;
                            Rectangle::new([(c, y), (c + 1, y + 1)], fill.filled())
                        }),
                )
                .map_err(err)?;
        }
        root.present()
            .map_err(|e| anyhow!("plot {}: {e}", path.display()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| anyhow!("plot {}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        let panel = Panel {
            title: "test",
            x_label: "step",
            curves: vec![Curve {
                label: "sin",
                points: (0..50)
                    .map(|i| (i as f64, (i as f64 * 0.1).sin()))
                    .collect(),
                color: BLUE,
                marks: Marks::Line,
            }],
            y_range: None,
        };
        panels_png(&path, &[panel]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 2000);
        let grid = Grid {
            title: "g".into(),
            rows: 4,
            cols: 4,
            values: (0..16).map(|i| i as f64 - 8.0).collect(),
            diverging: true,
        };
        let path = dir.path().join("g.png");
        grids_png(&path, &[grid], 1).unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[1..4], b"PNG");
    }
}
