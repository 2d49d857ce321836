//! A latency CDF as a self-contained SVG: one step line per series, a log-scaled time axis,
//! a legend. Pure: data in, text out.

use std::fmt::Write;

const W: f64 = 820.0;
const H: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLOURS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One line of the plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend's label.
    pub name: String,
    /// Index into the colour palette (lines of one family share a colour).
    pub colour: usize,
    /// 0 solid, 1 dashed, 2 dotted, … (lines of one family differ by dash).
    pub dash: usize,
    /// Latencies in ms.
    pub values: Vec<f64>,
}

const DASHES: &[&str] = &["", "7,4", "2,3", "10,3,2,3"];

/// Renders `series` as a CDF; `title` goes on top.
pub fn cdf(title: &str, series: &[Series]) -> String {
    let all: Vec<f64> = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|x| *x > 0.0 && x.is_finite())
        .collect();
    let (lo, hi) = if all.is_empty() {
        (1.0, 10.0)
    } else {
        let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = all.iter().copied().fold(0.0, f64::max);
        (
            10f64.powf(lo.log10().floor()),
            10f64.powf(hi.log10().ceil().max(lo.log10().floor() + 1.0)),
        )
    };
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |ms: f64| LEFT + (ms.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()) * pw;
    let y = |f: f64| TOP + (1.0 - f) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + pw / 2.0,
        escape(title)
    );
    // Grid: decades and 2x/5x ticks on x, tenths on y.
    let mut decade = lo;
    while decade <= hi * 1.0001 {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v > hi * 1.0001 {
                break;
            }
            let xv = x(v);
            let _ = writeln!(
                s,
                r##"<line x1="{xv:.1}" y1="{TOP}" x2="{xv:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xv:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 16.0,
                if v >= 1.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v}")
                }
            );
        }
        decade *= 10.0;
    }
    for i in 0..=10 {
        let f = f64::from(i) / 10.0;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yv:.1}" x2="{:.1}" y2="{yv:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{f:.1}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y(f) + 4.0,
            yv = y(f)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">latency (ms, log scale)</text>"#,
        LEFT + pw / 2.0,
        H - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">fraction of runs</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    for (i, line) in series.iter().enumerate() {
        let (name, values) = (&line.name, &line.values);
        let colour = COLOURS[line.colour % COLOURS.len()];
        let dash = match DASHES[line.dash % DASHES.len()] {
            "" => String::new(),
            d => format!(r#" stroke-dasharray="{d}""#),
        };
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        if !v.is_empty() {
            let n = v.len() as f64;
            let mut d = format!("M{:.1},{:.1}", x(v[0]), y(0.0));
            for (k, ms) in v.iter().enumerate() {
                let _ = write!(
                    d,
                    " L{:.1},{:.1} L{:.1},{:.1}",
                    x(*ms),
                    y(k as f64 / n),
                    x(*ms),
                    y((k + 1) as f64 / n)
                );
            }
            let _ = writeln!(
                s,
                r#"<path d="{d}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#
            );
        }
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            W - RIGHT + 15.0,
            W - RIGHT + 40.0,
            W - RIGHT + 46.0,
            ly + 4.0,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_path_and_one_legend_entry_per_series() {
        let line = |name: &str, colour, dash, values: Vec<f64>| Series {
            name: name.into(),
            colour,
            dash,
            values,
        };
        let svg = cdf(
            "t<1>",
            &[
                line("a", 0, 0, vec![1.0, 2.0, 3.0]),
                line("b&c", 0, 1, vec![10.0, 20.0]),
            ],
        );
        assert_eq!(
            svg.matches("stroke-dasharray").count(),
            2,
            "path and legend of b"
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<path ").count(), 2);
        assert!(svg.contains("t&lt;1&gt;"));
        assert!(svg.contains("b&amp;c"));
        // The last step of each CDF reaches fraction 1 (the top of the plot).
        assert!(svg.contains(&format!(",{TOP:.1}\"")) || svg.contains(&format!(",{TOP:.1} ")));
    }

    #[test]
    fn empty_input_still_renders() {
        let svg = cdf(
            "empty",
            &[Series {
                name: "none".into(),
                colour: 0,
                dash: 0,
                values: vec![],
            }],
        );
        assert_eq!(svg.matches("<path ").count(), 0);
        assert!(svg.contains("none"));
    }
}
