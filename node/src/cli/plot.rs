//! The devnet report's picture: loss per miner and weight per miner over windows.

use super::report::Row;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a system sans-serif font for labels; false when none is found (the plot is
/// then drawn without text).
fn register_font() -> bool {
    for p in FONT_PATHS {
        if let Ok(bytes) = std::fs::read(p) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

type Series = BTreeMap<String, Vec<(u64, f64)>>;

fn series(rows: &[Row], f: impl Fn(&Row) -> Option<f64>) -> Series {
    let mut out: Series = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.role == templar_protocol::node_status::NodeRole::Miner)
    {
        if let Some(v) = f(r).filter(|v| v.is_finite()) {
            out.entry(r.node.clone()).or_default().push((r.window, v));
        }
    }
    out
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    data: &Series,
    text: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let points = data.values().flatten();
    let (mut x0, mut x1, mut y0, mut y1) = (u64::MAX, 0u64, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0, 1, 0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.1).max(1e-6);
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(55);
    if text {
        builder.caption(title, ("sans-serif", 22));
    }
    let mut chart =
        builder.build_cartesian_2d(x0 as f64..(x1.max(x0 + 1)) as f64, (y0 - pad)..(y1 + pad))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("window");
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw()?;
    for (i, (name, pts)) in data.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let s = chart.draw_series(LineSeries::new(
            pts.iter().map(|&(x, y)| (x as f64, y)),
            color.stroke_width(2),
        ))?;
        if text {
            s.label(name.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
    }
    if text && !data.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

/// Writes a 1200x500 PNG: loss per miner (left) and weight per miner (right).
pub fn plot_report(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let text = register_font();
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(600);
        panel(
            &left,
            "training loss per miner",
            &series(rows, |r| r.loss),
            text,
        )?;
        panel(
            &right,
            "weight per miner",
            &series(rows, |r| r.weight),
            text,
        )?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))
}
