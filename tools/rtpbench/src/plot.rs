//! A hand-written SVG chart for a `--find-max` ladder: p99 one-way latency (left axis,
//! logarithmic, µs) and loss (right axis, %, linear) against the offered rate.

use std::fmt::Write as _;

/// One ladder step as plotted.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub offered_pps: f64,
    pub p99_us: f64,
    pub loss_pct: f64,
    pub pass: bool,
}

const W: f64 = 720.0;
const H: f64 = 420.0;
const L: f64 = 70.0;
const R: f64 = 70.0;
const T: f64 = 40.0;
const B: f64 = 60.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the chart; `title` is escaped.
pub fn svg(title: &str, points: &[Point]) -> String {
    let mut s = String::new();
    let pw = W - L - R;
    let ph = H - T - B;
    let xmax = points.iter().map(|p| p.offered_pps).fold(1.0, f64::max) * 1.05;
    // Latency axis: decades spanning the data, at least 10 µs .. 10 ms.
    let lo = points
        .iter()
        .map(|p| p.p99_us)
        .filter(|v| *v > 0.0)
        .fold(10.0, f64::min)
        .log10()
        .floor();
    let hi = points
        .iter()
        .map(|p| p.p99_us)
        .fold(10_000.0, f64::max)
        .log10()
        .ceil();
    let lmax = points.iter().map(|p| p.loss_pct).fold(1.0, f64::max).ceil();
    let x = |v: f64| L + v / xmax * pw;
    let yl = |v: f64| T + ph - (v.max(10f64.powf(lo)).log10() - lo) / (hi - lo).max(1.0) * ph;
    let yr = |v: f64| T + ph - v / lmax * ph;
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="{W}" height="{H}" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"##,
        W / 2.0,
        esc(title)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"##
    );
    // x ticks: 6 intervals.
    for i in 0..=6 {
        let v = xmax / 6.0 * i as f64;
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#ddd"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4:.0}k</text>"##,
            x(v),
            T,
            T + ph,
            T + ph + 16.0,
            v / 1000.0
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" text-anchor="middle">offered rate (packets/s, both directions)</text>"##,
        L + pw / 2.0,
        H - 18.0
    );
    // Left axis decades.
    let mut d = lo;
    while d <= hi {
        let v = 10f64.powf(d);
        let label = if v >= 1000.0 {
            format!("{} ms", v / 1000.0)
        } else {
            format!("{v} µs")
        };
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#eee"/><text x="{2}" y="{3:.1}" text-anchor="end" fill="#1f4e9c">{label}</text>"##,
            yl(v),
            L + pw,
            L - 6.0,
            yl(v) + 4.0
        );
        d += 1.0;
    }
    for i in 0..=4 {
        let v = lmax / 4.0 * i as f64;
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{:.1}" fill="#b22">{v:.2}%</text>"##,
            L + pw + 6.0,
            yr(v) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="16" y="{0}" transform="rotate(-90 16 {0})" text-anchor="middle" fill="#1f4e9c">p99 one-way latency (log)</text>"##,
        T + ph / 2.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{0}" y="{1}" transform="rotate(90 {0} {1})" text-anchor="middle" fill="#b22">loss</text>"##,
        W - 14.0,
        T + ph / 2.0
    );
    let line = |f: &dyn Fn(&Point) -> (f64, f64)| -> String {
        points
            .iter()
            .map(|p| {
                let (a, b) = f(p);
                format!("{a:.1},{b:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#1f4e9c" stroke-width="2"/>"##,
        line(&|p| (x(p.offered_pps), yl(p.p99_us)))
    );
    let _ = writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#b22" stroke-width="2" stroke-dasharray="6 3"/>"##,
        line(&|p| (x(p.offered_pps), yr(p.loss_pct)))
    );
    for p in points {
        let fill = if p.pass { "#1f4e9c" } else { "white" };
        let _ = writeln!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{fill}" stroke="#1f4e9c"/>"##,
            x(p.offered_pps),
            yl(p.p99_us)
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}">filled = step passed (&lt;0.1% loss, &gt;=97% of target sent, tail &lt;= 50 ms)</text>"##,
        L + 6.0,
        T + 14.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_both_series_and_escapes_title() {
        let pts = [
            Point {
                offered_pps: 20_000.0,
                p99_us: 150.0,
                loss_pct: 0.0,
                pass: true,
            },
            Point {
                offered_pps: 40_000.0,
                p99_us: 30_000.0,
                loss_pct: 2.5,
                pass: false,
            },
        ];
        let s = svg("a<b", &pts);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert_eq!(s.matches("<circle").count(), 2);
        assert!(s.contains("a&lt;b"));
        assert!(!s.contains("NaN") && !s.contains("inf"));
        // Empty input still renders a valid frame.
        assert!(svg("x", &[]).contains("</svg>"));
    }
}
