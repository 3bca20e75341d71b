//! Line charts as inline SVG: axes, grid, legend and one polyline per series.

use std::fmt::Write as _;

use super::escape;

/// Series colours, in order; a chart with more series reuses them.
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 36.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 44.0;

/// Rightmost point of the percentile axis: 99.999%, that is 1/(1-p) = 10^5.
const PERCENTILE_NINES: f64 = 5.0;

/// How x values map to the horizontal axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XAxis {
    /// x as is, from 0 (or the least x, if negative).
    Linear,
    /// x is a quantile p in [0, 1], drawn at log10(1/(1-p)) from 0% to 99.999%.
    Percentile,
}

/// One line: its legend name and its (x, y) points in x order.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_axis: XAxis,
    pub series: Vec<Series>,
}

/// The data ranges a chart shows, and how they map to pixels.
struct Frame {
    x_min: f64,
    x_max: f64,
    y_max: f64,
    y_step: f64,
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.x_min) / (self.x_max - self.x_min) * (WIDTH - LEFT - RIGHT)
    }

    fn py(&self, y: f64) -> f64 {
        HEIGHT - BOTTOM - y / self.y_max * (HEIGHT - TOP - BOTTOM)
    }
}

// `fmt::Write` for a `String` never fails, hence the ignored results in this file.
impl Chart {
    /// The chart as one `<svg>` element.
    pub(crate) fn svg(&self) -> String {
        let frame = self.frame();
        let title = escape(&self.title);
        let mut out = format!(
            "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" \
             height=\"{HEIGHT}\" role=\"img\" aria-label=\"{title}\">\n<title>{title}</title>\n\
             <text class=\"title\" x=\"{LEFT}\" y=\"18\">{title}</text>\n"
        );
        self.y_grid(&frame, &mut out);
        self.x_grid(&frame, &mut out);
        let has_points = self.series.iter().any(|series| !series.points.is_empty());
        if has_points {
            self.lines(&frame, &mut out);
        } else {
            let (x, y) = ((LEFT + WIDTH - RIGHT) / 2.0, (TOP + HEIGHT - BOTTOM) / 2.0);
            let _ = writeln!(
                out,
                "<text class=\"empty\" x=\"{x}\" y=\"{y}\" text-anchor=\"middle\">no data</text>"
            );
        }
        self.legend(&mut out);
        out.push_str("</svg>\n");
        out
    }

    fn x(&self, x: f64) -> f64 {
        match self.x_axis {
            XAxis::Linear => x,
            XAxis::Percentile if x >= 1.0 => PERCENTILE_NINES,
            XAxis::Percentile => (-(1.0 - x).log10()).clamp(0.0, PERCENTILE_NINES),
        }
    }

    fn frame(&self) -> Frame {
        let points = || self.series.iter().flat_map(|series| &series.points);
        let y_max = points().map(|&(_, y)| y).fold(0.0, f64::max);
        let (x_min, x_max) = match self.x_axis {
            XAxis::Percentile => (0.0, PERCENTILE_NINES),
            XAxis::Linear => {
                let xs = || points().map(|&(x, _)| x);
                let min = xs().fold(0.0, f64::min);
                let max = xs().fold(f64::NEG_INFINITY, f64::max);
                if max > min {
                    (min, max)
                } else {
                    (min, min + 1.0)
                }
            }
        };
        let y_step = nice_step(y_max / 5.0);
        Frame {
            x_min,
            x_max,
            y_max: (y_max / y_step).ceil().max(1.0) * y_step,
            y_step,
        }
    }

    fn y_grid(&self, frame: &Frame, out: &mut String) {
        let mut y = 0.0;
        while y <= frame.y_max * (1.0 + 1e-9) {
            let py = frame.py(y);
            let (x1, x2) = (LEFT, WIDTH - RIGHT);
            let _ = writeln!(
                out,
                "<line class=\"grid\" x1=\"{x1}\" y1=\"{py:.1}\" x2=\"{x2}\" y2=\"{py:.1}\"/>\
                 <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT - 6.0,
                py + 4.0,
                tick_label(y)
            );
            y += frame.y_step;
        }
        let (x, y) = (14.0, (TOP + HEIGHT - BOTTOM) / 2.0);
        let _ = writeln!(
            out,
            "<text class=\"label\" x=\"{x}\" y=\"{y}\" text-anchor=\"middle\" \
             transform=\"rotate(-90 {x} {y})\">{}</text>",
            escape(&self.y_label)
        );
    }

    fn x_grid(&self, frame: &Frame, out: &mut String) {
        let ticks: Vec<(f64, String)> = match self.x_axis {
            XAxis::Percentile => ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
                .iter()
                .zip(0_u8..)
                .map(|(label, nines)| (f64::from(nines), (*label).to_owned()))
                .collect(),
            XAxis::Linear => {
                let step = nice_step((frame.x_max - frame.x_min) / 8.0);
                let first = (frame.x_min / step).ceil() * step;
                // At most about 9 ticks: the step is at least an eighth of the range.
                (0..64_u8)
                    .map(|i| first + f64::from(i) * step)
                    .take_while(|x| *x <= frame.x_max * (1.0 + 1e-9))
                    .map(|x| (x, tick_label(x)))
                    .collect()
            }
        };
        let (y1, y2) = (TOP, HEIGHT - BOTTOM);
        for (x, label) in ticks {
            let px = frame.px(x);
            let _ = writeln!(
                out,
                "<line class=\"grid\" x1=\"{px:.1}\" y1=\"{y1}\" x2=\"{px:.1}\" y2=\"{y2}\"/>\
                 <text class=\"tick\" x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                y2 + 16.0,
                escape(&label)
            );
        }
        let _ = writeln!(
            out,
            "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{y2}\" x2=\"{:.1}\" y2=\"{y2}\"/>\
             <line class=\"axis\" x1=\"{LEFT}\" y1=\"{y1}\" x2=\"{LEFT}\" y2=\"{y2}\"/>\
             <text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            WIDTH - RIGHT,
            (LEFT + WIDTH - RIGHT) / 2.0,
            HEIGHT - 6.0,
            escape(&self.x_label)
        );
    }

    fn lines(&self, frame: &Frame, out: &mut String) {
        for (series, color) in self.series.iter().zip(COLORS.iter().cycle()) {
            let mut points = String::new();
            for &(x, y) in &series.points {
                let _ = write!(points, "{:.1},{:.1} ", frame.px(self.x(x)), frame.py(y));
            }
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.8\" \
                 stroke-linejoin=\"round\" points=\"{}\"><title>{}</title></polyline>",
                points.trim_end(),
                escape(&series.name)
            );
        }
    }

    fn legend(&self, out: &mut String) {
        let mut x = LEFT;
        for (series, color) in self.series.iter().zip(COLORS.iter().cycle()) {
            let _ = writeln!(
                out,
                "<rect x=\"{x:.1}\" y=\"28\" width=\"12\" height=\"4\" fill=\"{color}\"/>\
                 <text class=\"legend\" x=\"{:.1}\" y=\"34\">{}</text>",
                x + 16.0,
                escape(&series.name)
            );
            x += 32.0 + 7.0 * series.name.chars().count() as f64;
        }
    }
}

/// A round step (1, 2, 2.5 or 5 times a power of ten) at least `raw`; 1 for `raw` ≤ 0.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let magnitude = 10_f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|factor| factor * magnitude)
        .find(|step| *step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

/// A short axis label: `12`, `2.5`, `40k`, `1.2M`.
pub(crate) fn tick_label(value: f64) -> String {
    let (scaled, suffix) = if value.abs() >= 1e6 {
        (value / 1e6, "M")
    } else if value.abs() >= 1e4 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = format!("{scaled:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert!((nice_step(0.7) - 1.0).abs() < 1e-12);
        assert!((nice_step(1.3) - 2.0).abs() < 1e-12);
        assert!((nice_step(2.2) - 2.5).abs() < 1e-12);
        assert!((nice_step(31.0) - 50.0).abs() < 1e-12);
        assert!((nice_step(60.0) - 100.0).abs() < 1e-12);
        assert!((nice_step(0.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn tick_labels() {
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(2.5), "2.5");
        assert_eq!(tick_label(500.0), "500");
        assert_eq!(tick_label(40_000.0), "40k");
        assert_eq!(tick_label(1_250_000.0), "1.25M");
    }

    #[test]
    fn percentile_axis_positions() {
        let chart = Chart {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            x_axis: XAxis::Percentile,
            series: Vec::new(),
        };
        assert!((chart.x(0.0) - 0.0).abs() < 1e-9);
        assert!((chart.x(0.99) - 2.0).abs() < 1e-9);
        assert!((chart.x(0.999_999) - 5.0).abs() < 1e-9);
        assert!((chart.x(1.0) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn points_stay_inside_the_plot_area() {
        let chart = Chart {
            title: "t".to_owned(),
            x_label: "x".to_owned(),
            y_label: "y".to_owned(),
            x_axis: XAxis::Linear,
            series: vec![Series {
                name: "s".to_owned(),
                points: vec![(3.0, 0.0), (4.0, 17.0), (9.0, 3.0)],
            }],
        };
        let frame = chart.frame();
        assert!(frame.y_max >= 17.0);
        for &(x, y) in &chart.series[0].points {
            let (px, py) = (frame.px(x), frame.py(y));
            assert!((LEFT..=WIDTH - RIGHT).contains(&px), "{px}");
            assert!((TOP..=HEIGHT - BOTTOM).contains(&py), "{py}");
        }
    }
}
