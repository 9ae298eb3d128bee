//! PNG plots of series (plotters' bitmap backend with an embedded DejaVu Sans, so a plot
//! needs no system fonts).

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

/// One curve.
pub struct Curve<'a> {
    /// Legend.
    pub label: &'a str,
    /// Points `(x, y)`; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
    /// Colour.
    pub color: RGBColor,
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
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(c.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
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
            }],
            y_range: None,
        };
        panels_png(&path, &[panel]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 2000);
    }
}
