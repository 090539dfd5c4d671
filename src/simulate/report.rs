//! What `fulcrum simulate` prints: the comparison table, the recommendation and its reason,
//! the same as JSON, and the in-flight chart as SVG. Only ordered data (vectors) goes in,
//! so the output is the same byte for byte for the same scenario.

use std::fmt::Write;

use serde::Serialize;

use super::engine::Run;
use super::scenario::Scenario;

/// The whole comparison.
#[derive(Debug)]
pub struct Report<'a> {
    pub scenario: &'a Scenario,
    pub runs: Vec<Run>,
}

#[derive(Serialize)]
struct JsonRun<'a> {
    algorithm: &'a str,
    max_connections: bool,
    offered: u64,
    served: u64,
    rejected_503: u64,
    failed: u64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    crashes: u32,
    peak_in_flight: Vec<(&'a str, u32)>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    scenario: &'a str,
    description: &'a str,
    seed: u64,
    duration_s: f64,
    runs: Vec<JsonRun<'a>>,
    recommendation: JsonChoice<'a>,
}

#[derive(Serialize)]
struct JsonChoice<'a> {
    algorithm: &'a str,
    max_connections: bool,
    reason: String,
}

/// Rounds to microseconds so JSON and text agree and stay short.
fn ms(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

impl Report<'_> {
    /// The index of the recommended run: no crashes first, then the fewest requests not
    /// served (503 or failed), then the lowest p99, then with limits; else the first listed.
    pub fn best(&self) -> Option<usize> {
        (0..self.runs.len()).min_by(|&a, &b| {
            let key = |r: &Run| (r.crashes, r.rejected + r.failed);
            let (ra, rb) = (&self.runs[a], &self.runs[b]);
            key(ra)
                .cmp(&key(rb))
                .then(ra.quantile_ms(0.99).total_cmp(&rb.quantile_ms(0.99)))
                // Equal results: with limits, which also hold on a worse day.
                .then(rb.limits.cmp(&ra.limits))
        })
    }

    /// Why the best run is recommended, in one paragraph.
    pub fn reason(&self) -> String {
        let Some(b) = self.best() else {
            return "no runs".into();
        };
        let r = &self.runs[b];
        let lost = r.rejected + r.failed;
        let pct = 100.0 * lost as f64 / r.offered.max(1) as f64;
        let mut out = format!(
            "{} {} max_connections: {} crash(es), {lost} of {} requests not served ({pct:.2}%), p99 {:.1} ms.",
            r.algorithm,
            if r.limits { "with" } else { "without" },
            r.crashes,
            r.offered,
            r.quantile_ms(0.99),
        );
        let unlimited_crashes: u32 = self
            .runs
            .iter()
            .filter(|r| !r.limits)
            .map(|r| r.crashes)
            .sum();
        let crashed_algs = self
            .runs
            .iter()
            .filter(|r| !r.limits && r.crashes > 0)
            .count();
        if r.limits && unlimited_crashes > 0 {
            let _ = write!(
                out,
                " Without max_connections {crashed_algs} of {} algorithms let a server crash ({unlimited_crashes} crashes in all): the limit, not the algorithm, is what holds.",
                self.runs.iter().filter(|r| !r.limits).count()
            );
        }
        if let Some(same) = self
            .runs
            .iter()
            .find(|o| o.algorithm == r.algorithm && o.limits != r.limits)
        {
            let _ = write!(
                out,
                " The same algorithm {} limits: {} crash(es), {} not served.",
                if same.limits { "with" } else { "without" },
                same.crashes,
                same.rejected + same.failed
            );
        }
        out.push_str(
            " Chosen by: fewest crashes, then fewest requests not served, then lowest p99.",
        );
        out
    }

    /// The human table.
    pub fn text(&self) -> String {
        let sc = self.scenario;
        let mut out = String::new();
        let _ = writeln!(out, "scenario {}: {}", sc.name, sc.description.trim());
        let _ = writeln!(
            out,
            "seed {}, {} of traffic, {} server(s); the real selection code in virtual time\n",
            sc.seed,
            sc.duration,
            sc.servers.len()
        );
        let _ = writeln!(
            out,
            "{:<18} {:<6} {:>8} {:>7} {:>7} {:>8} {:>8} {:>9} {:>7}  peak in-flight",
            "algorithm",
            "limits",
            "served",
            "503",
            "failed",
            "p50 ms",
            "p99 ms",
            "p999 ms",
            "crashes"
        );
        for r in &self.runs {
            let peaks: Vec<String> = sc
                .servers
                .iter()
                .zip(&r.peak)
                .map(|(s, p)| format!("{}:{p}", s.name))
                .collect();
            let _ = writeln!(
                out,
                "{:<18} {:<6} {:>8} {:>7} {:>7} {:>8.1} {:>8.1} {:>9.1} {:>7}  {}",
                r.algorithm.name(),
                if r.limits { "on" } else { "off" },
                r.served,
                r.rejected,
                r.failed,
                r.quantile_ms(0.5),
                r.quantile_ms(0.99),
                r.quantile_ms(0.999),
                r.crashes,
                peaks.join(" ")
            );
        }
        if let Some(b) = self.best() {
            let r = &self.runs[b];
            let _ = writeln!(
                out,
                "\nrecommendation: algorithm = \"{}\" {} max_connections\n{}",
                r.algorithm,
                if r.limits { "with" } else { "without" },
                wrap(&self.reason(), 96)
            );
        }
        out
    }

    /// The same as JSON.
    pub fn json(&self) -> String {
        let sc = self.scenario;
        let runs = self
            .runs
            .iter()
            .map(|r| JsonRun {
                algorithm: r.algorithm.name(),
                max_connections: r.limits,
                offered: r.offered,
                served: r.served,
                rejected_503: r.rejected,
                failed: r.failed,
                p50_ms: ms(r.quantile_ms(0.5)),
                p99_ms: ms(r.quantile_ms(0.99)),
                p999_ms: ms(r.quantile_ms(0.999)),
                crashes: r.crashes,
                peak_in_flight: sc
                    .servers
                    .iter()
                    .map(|s| s.name.as_str())
                    .zip(r.peak.iter().copied())
                    .collect(),
            })
            .collect();
        let best = self.best().map(|b| &self.runs[b]);
        let report = JsonReport {
            scenario: &sc.name,
            description: sc.description.trim(),
            seed: sc.seed,
            duration_s: sc.duration.get().as_secs_f64(),
            runs,
            recommendation: JsonChoice {
                algorithm: best.map_or("", |r| r.algorithm.name()),
                max_connections: best.is_some_and(|r| r.limits),
                reason: self.reason(),
            },
        };
        serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A chart of in-flight requests per server over time for the recommended algorithm,
    /// without limits (top) and with them (bottom). Plain SVG, written by hand.
    pub fn svg(&self) -> String {
        let Some(b) = self.best() else {
            return String::new();
        };
        let alg = self.runs[b].algorithm;
        let panels: Vec<&Run> = [false, true]
            .iter()
            .filter_map(|&l| {
                self.runs
                    .iter()
                    .find(|r| r.algorithm == alg && r.limits == l)
            })
            .collect();
        let (w, ph, top) = (860.0, 240.0, 50.0);
        let h = top + ph * panels.len() as f64 + 20.0;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">"
        );
        let _ = writeln!(out, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
        let _ = writeln!(
            out,
            "<text x=\"20\" y=\"24\" font-size=\"15\" font-weight=\"bold\">fulcrum simulate --scenario {}: requests in flight per server, {alg}</text>",
            xml(&self.scenario.name)
        );
        const COLORS: [&str; 8] = [
            "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
        ];
        for (p, run) in panels.iter().enumerate() {
            let y0 = top + ph * p as f64;
            let (x0, pw, plot_h) = (60.0, w - 230.0, ph - 60.0);
            let max = run
                .samples
                .iter()
                .flatten()
                .copied()
                .max()
                .unwrap_or(0)
                .max(1);
            let steps = run.samples.len().saturating_sub(1).max(1) as f64;
            let _ = writeln!(
                out,
                "<text x=\"{x0}\" y=\"{:.1}\" font-weight=\"bold\">max_connections {}: {} crash(es), {} failed, {} answered 503</text>",
                y0 + 14.0,
                if run.limits { "on" } else { "off" },
                run.crashes,
                run.failed,
                run.rejected
            );
            let (py, pb) = (y0 + 24.0, y0 + 24.0 + plot_h);
            let _ = writeln!(
                out,
                "<path d=\"M{x0} {py:.1} V{pb:.1} H{:.1}\" fill=\"none\" stroke=\"#333\"/>",
                x0 + pw
            );
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{max}</text><text x=\"{:.1}\" y=\"{pb:.1}\" text-anchor=\"end\">0</text>",
                x0 - 6.0,
                py + 4.0,
                x0 - 6.0
            );
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} s</text><text x=\"{x0}\" y=\"{:.1}\">0 s</text>",
                x0 + pw,
                pb + 16.0,
                steps as u64,
                pb + 16.0
            );
            for (s, model) in self.scenario.servers.iter().enumerate() {
                let color = COLORS[s % COLORS.len()];
                let mut d = String::new();
                for (i, sample) in run.samples.iter().enumerate() {
                    let v = f64::from(sample.get(s).copied().unwrap_or(0));
                    let x = x0 + pw * i as f64 / steps;
                    let y = pb - plot_h * v / f64::from(max);
                    let _ = write!(d, "{}{x:.1} {y:.1}", if i == 0 { "M" } else { " L" });
                }
                let _ = writeln!(
                    out,
                    "<path d=\"{d}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>"
                );
                let ly = py + 10.0 + 18.0 * s as f64;
                let _ = writeln!(
                    out,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\">{} (peak {})</text>",
                    x0 + pw + 16.0,
                    ly - 10.0,
                    x0 + pw + 34.0,
                    ly,
                    xml(&model.name),
                    run.peak.get(s).copied().unwrap_or(0)
                );
            }
        }
        out.push_str("</svg>\n");
        out
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Wraps text at word boundaries to `width` columns.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        if line > 0 && line + 1 + word.len() > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}
