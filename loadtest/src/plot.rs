//! `--plot FILE.svg|FILE.png`: the measured latency by percentile, HdrHistogram style — the x axis
//! counts "nines" (0 %, 90 %, 99 %, 99.9 %, … plotted as −log10(1 − p)), the y axis is latency in
//! ms, one line per phase.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::Report;

/// Size of the image, pixels.
const SIZE: (u32, u32) = (1024, 640);

/// `-log10(1 - q)`: 0 at the median's start, 1 at p90, 2 at p99, 3 at p99.9 …
pub fn nines(q: f64) -> f64 {
    -(1.0 - q).log10()
}

/// The axis label at `x` nines: `0%`, `90%`, `99%`, `99.9%`, `99.99%` …
pub fn nines_label(x: f64) -> String {
    if x <= 0.0 {
        return "0%".into();
    }
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = (x.ceil() as usize).saturating_sub(2);
    format!("{p:.decimals$}%")
}

/// The (nines, ms) points of a histogram of µs: one per quantile step, the last at the maximum
/// placed at 1 − 1/count (what its rank stands for).
pub fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let last = nines(1.0 - 1.0 / h.len() as f64).max(0.0);
    let mut pts: Vec<(f64, f64)> = h
        .iter_quantiles(4)
        .filter(|v| v.quantile_iterated_to() < 1.0)
        .map(|v| {
            (
                nines(v.quantile_iterated_to()).min(last),
                v.value_iterated_to() as f64 / 1000.0,
            )
        })
        .collect();
    pts.push((last, h.max() as f64 / 1000.0));
    pts
}

/// Draws the plot of `report` to `path`; the extension picks the format (`.svg` or `.png`).
pub fn plot(report: &Report, path: &Path) -> Result<(), String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("svg") => draw(SVGBackend::new(path, SIZE).into_drawing_area(), report),
        Some("png") => draw(BitMapBackend::new(path, SIZE).into_drawing_area(), report),
        _ => Err(format!(
            "--plot {}: the file name must end in .svg or .png",
            path.display()
        )),
    }
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, report: &Report) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("plot: {e}");
    let series: Vec<(&str, Vec<(f64, f64)>)> = report
        .shown_phases()
        .into_iter()
        .map(|(name, p, _)| (name, percentile_points(&p.latency)))
        .collect();
    let x_max = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.0))
        .fold(3.0f64, f64::max)
        .ceil();
    let y_max = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    root.fill(&WHITE).map_err(err)?;
    let title = format!(
        "gavel-load: {} at {} req/s requested — latency by percentile",
        report.scenario, report.requested_rate
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((0f64..x_max).step(1.0), 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms, from scheduled send)")
        .x_label_formatter(&|x| nines_label(*x))
        .draw()
        .map_err(err)?;
    for (i, (name, pts)) in series.into_iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(4.0), "99.99%");
    }

    #[test]
    fn plots_synthetic_report_to_svg() {
        let r = crate::report::tests::synthetic_report();
        let dir = std::env::temp_dir().join(format!("gavel-load-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("latency.svg");
        plot(&r, &path).unwrap();
        let svg = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        // The text of every <text> element (the legend, the title, the axis labels).
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim()))
            .collect();
        for phase in ["ping", "post", "e2e"] {
            assert!(texts.contains(&phase), "no {phase} in {texts:?}");
        }
        assert!(texts.iter().any(|t| t.contains("ping-post at 100 req/s")));
        assert!(texts.contains(&"99%"), "{texts:?}");
        let bad = plot(&r, &dir.join("latency.pdf")).unwrap_err();
        assert!(bad.contains(".svg or .png"), "{bad}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
