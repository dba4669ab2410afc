//! RSS over time for every peer, drawn with plotters' SVG backend (text as SVG `<text>`, sized
//! by plotters' built-in estimate: no font files, no system libraries), one panel per corpus.

use std::path::Path;

use plotters::prelude::*;

use super::CorpusResult;

/// Colours of the peers, in report order.
const COLOURS: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

/// Draws `corpora` (one panel each, top to bottom) to the SVG file `path`, creating its
/// directory.
///
/// # Errors
/// A one-line message when the directory or the file cannot be written.
pub(super) fn draw(path: &Path, corpora: &[CorpusResult]) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let fail = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let panels = corpora.len().max(1) as u32;
    let root = SVGBackend::new(path, (960, 380 * panels)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    for (area, c) in root
        .split_evenly((corpora.len().max(1), 1))
        .iter()
        .zip(corpora)
    {
        let t_max = c
            .peers
            .iter()
            .flat_map(|p| p.rss.samples.last().map(|s| s.0))
            .fold(0.0_f64, f64::max)
            .max(1e-3);
        let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
        let y_max = c
            .peers
            .iter()
            .map(|p| mib(p.rss.peak_bytes))
            .fold(0.0_f64, f64::max)
            * 1.1
            + 1.0;
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!(
                    "RSS over time, {} corpus ({} requests per peer)",
                    c.corpus, c.requests
                ),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("seconds since the workers started")
            .y_desc("RSS, MiB")
            .draw()
            .map_err(|e| fail(&e))?;
        for (i, p) in c.peers.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    p.rss.samples.iter().map(|&(t, b)| (t, mib(b))),
                    colour.stroke_width(2),
                ))
                .map_err(|e| fail(&e))?
                .label(p.peer.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
