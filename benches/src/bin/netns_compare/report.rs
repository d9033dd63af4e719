//! The comparison's report: medians, the markdown table of medians and
//! ratios (Causeway divided by each other implementation, the modern
//! wireguard-go first), and the SVG chart relative to the first of them.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::Topology;

/// The order of the ratio columns (Causeway ÷ each) and the chart's
/// reference (the first present): the strongest competitor first.
pub const RATIO_ORDER: [&str; 4] = ["wireguard-go-modern", "wireguard-go", "boringtun", "causeway-baseline"];

pub const METRICS: [(&str, &str, bool); 5] = [
    ("tcp_1_stream_gbps", "TCP, 1 stream (Gbit/s)", true),
    ("tcp_4_streams_gbps", "TCP, 4 streams (Gbit/s)", true),
    ("udp_64b_kpps", "UDP 64-byte packets (kpps received)", true),
    ("ping_rtt_ms", "Ping RTT (ms)", false),
    ("cpu_s_per_gb", "Gateway CPU seconds per GB (TCP 1 stream)", false),
];

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// The implementations Causeway is divided by, in RATIO_ORDER, then any
/// others in the order given.
pub fn others(impls: &[String]) -> Vec<&String> {
    let mut v: Vec<&String> = RATIO_ORDER.iter().filter_map(|r| impls.iter().find(|i| i == r)).collect();
    v.extend(impls.iter().filter(|i| *i != "causeway" && !RATIO_ORDER.contains(&i.as_str())));
    v
}

pub fn value(medians: &BTreeMap<String, BTreeMap<String, f64>>, imp: &str, key: &str) -> f64 {
    medians.get(imp).and_then(|m| m.get(key)).copied().unwrap_or(f64::NAN)
}

pub fn svg(
    path: &Path,
    topology: &str,
    impls: &[String],
    medians: &BTreeMap<String, BTreeMap<String, f64>>,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let base = others(impls).first().copied().unwrap_or(&impls[0]).clone();
    let root = SVGBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = METRICS
        .iter()
        .flat_map(|(k, _, _)| impls.iter().map(move |i| (k, i)))
        .map(|(k, i)| value(medians, i, k) / value(medians, &base, k))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Causeway vs other userspace tunnels ({topology}): medians ÷ {base}; ↑ higher is better, ↓ lower"),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(10)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..METRICS.len() as f64, 0f64..max * 1.15)?;
    chart.configure_mesh().disable_x_mesh().x_labels(0).y_desc("ratio to baseline").draw()?;
    // Group labels inside the plot, above the bars: axis labels would be
    // placed by plotters' tick picker rather than under each group.
    let short = ["TCP 1 stream ↑", "TCP 4 streams ↑", "UDP 64 B pps ↑", "ping RTT ↓", "CPU s per GB ↓"];
    chart.draw_series(
        short
            .iter()
            .enumerate()
            .map(|(i, t)| Text::new(t.to_string(), (i as f64 + 0.12, max * 1.12), ("sans-serif", 15))),
    )?;
    let colors = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0x8c, 0x56, 0x4b),
    ];
    let width = 0.8 / impls.len() as f64;
    for (n, imp) in impls.iter().enumerate() {
        let color = colors[n % colors.len()];
        let bars: Vec<Rectangle<(f64, f64)>> = METRICS
            .iter()
            .enumerate()
            .filter_map(|(i, (k, _, _))| {
                let v = value(medians, imp, k) / value(medians, &base, k);
                let x0 = i as f64 + 0.1 + n as f64 * width;
                v.is_finite().then(|| Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], color.filled()))
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(imp.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.9)).draw()?;
    root.present()?;
    Ok(())
}

/// The markdown table of medians and ratios, after the run's notes (one
/// paragraph each: what differs between the implementations' setups).
pub fn table(
    machine: &Value,
    topology: &str,
    rounds: usize,
    seconds: u64,
    impls: &[String],
    medians: &BTreeMap<String, BTreeMap<String, f64>>,
    notes: &[String],
) -> String {
    // Ratios need Causeway's own column.
    let others = if impls.iter().any(|i| i == "causeway") { others(impls) } else { vec![] };
    let mut t = format!(
        "Machine: {} cores, {}, kernel {}; {rounds} rounds of {seconds} s per test, medians.\n\nTopology: {}.\n\n",
        machine["cores"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?"),
        Topology::describe(topology),
    );
    for n in notes {
        t += &format!("{n}.\n\n");
    }
    t += "| metric |";
    for i in impls {
        t += &format!(" {i} |");
    }
    for o in &others {
        t += &format!(" causeway ÷ {o} |");
    }
    t += &format!("\n|---|{}\n", "---|".repeat(impls.len() + others.len()));
    for (key, label, _) in METRICS {
        t += &format!("| {label} |");
        for i in impls {
            t += &format!(" {:.3} |", value(medians, i, key));
        }
        for o in &others {
            t += &format!(" {:.2} |", value(medians, "causeway", key) / value(medians, o, key));
        }
        t.push('\n');
    }
    t
}
