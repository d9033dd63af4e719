//! The comparison's report: medians, the markdown table of medians and
//! ratios (the reference, Causeway unless --reference names another,
//! divided by each other implementation, the modern wireguard-go first),
//! and the SVG chart relative to the first of those others.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::bail;
use serde_json::Value;

use crate::topology::Topology;

/// The order of the ratio columns (reference ÷ each) and the chart's
/// divisor (the first present): the strongest competitor first. Causeway
/// (WireGuard) leads for the references that are not it, such as
/// causeway-esp; as the default reference it is never its own divisor.
pub const RATIO_ORDER: [&str; 5] =
    ["causeway", "wireguard-go-modern", "wireguard-go", "boringtun", "causeway-baseline"];

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

/// The implementations `reference` is divided by, in RATIO_ORDER, then
/// any others in the order given.
pub fn others<'a>(impls: &'a [String], reference: &str) -> Vec<&'a String> {
    let mut v: Vec<&String> =
        RATIO_ORDER.iter().filter(|r| **r != reference).filter_map(|r| impls.iter().find(|i| i == r)).collect();
    v.extend(impls.iter().filter(|i| *i != reference && !RATIO_ORDER.contains(&i.as_str())));
    v
}

/// The chart's caption. Runs with Causeway as the reference keep the
/// caption they always had.
fn caption(topology: &str, reference: &str, base: &str) -> String {
    let subject = match reference {
        "causeway" => "Causeway vs other userspace tunnels".to_string(),
        r => format!("{r} vs the others"),
    };
    format!("{subject} ({topology}): medians ÷ {base}; ↑ higher is better, ↓ lower")
}

pub fn value(medians: &BTreeMap<String, BTreeMap<String, f64>>, imp: &str, key: &str) -> f64 {
    medians.get(imp).and_then(|m| m.get(key)).copied().unwrap_or(f64::NAN)
}

/// One colour per implementation of a run, as many as the harness knows
/// (a run names each at most once), so no two bars of a group look alike.
pub const COLORS: [(u8, u8, u8); 10] = [
    (0x1f, 0x77, 0xb4),
    (0xff, 0x7f, 0x0e),
    (0x2c, 0xa0, 0x2c),
    (0xd6, 0x27, 0x28),
    (0x94, 0x67, 0xbd),
    (0x8c, 0x56, 0x4b),
    (0xe3, 0x77, 0xc2),
    (0x7f, 0x7f, 0x7f),
    (0xbc, 0xbd, 0x22),
    (0x17, 0xbe, 0xcf),
];

/// Writes `contents` to `path` through a temporary file beside it, so an
/// interrupted run leaves the results before it whole or none.
pub fn write_whole(path: &Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    through_temporary(path, |tmp| std::fs::write(tmp, contents))
}

/// Has `write` make the file at a temporary path beside `path`, then
/// renames it into place; a failed write leaves no temporary file.
fn through_temporary<E: From<std::io::Error>>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = path.with_extension(format!("{}.partial", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let written = write(&tmp).and_then(|()| Ok(std::fs::rename(&tmp, path)?));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The chart of medians as ratios to the first implementation that is not
/// the reference, written whole (see `write_whole`).
pub fn svg(
    path: &Path,
    topology: &str,
    impls: &[String],
    reference: &str,
    medians: &BTreeMap<String, BTreeMap<String, f64>>,
) -> anyhow::Result<()> {
    through_temporary(path, |tmp| draw_svg(tmp, topology, impls, reference, medians))
}

fn draw_svg(
    path: &Path,
    topology: &str,
    impls: &[String],
    reference: &str,
    medians: &BTreeMap<String, BTreeMap<String, f64>>,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let base = others(impls, reference).first().copied().unwrap_or(&impls[0]).clone();
    let root = SVGBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = METRICS
        .iter()
        .flat_map(|(k, _, _)| impls.iter().map(move |i| (k, i)))
        .map(|(k, i)| value(medians, i, k) / value(medians, &base, k))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption(topology, reference, &base), ("sans-serif", 18))
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
    let width = 0.8 / impls.len() as f64;
    for (n, imp) in impls.iter().enumerate() {
        let (r, g, b) = COLORS[n % COLORS.len()];
        let color = RGBColor(r, g, b);
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

/// The markdown table of medians and ratios (`reference` ÷ each other),
/// after the run's notes (one paragraph each: what differs between the
/// implementations' setups).
#[allow(clippy::too_many_arguments)]
pub fn table(
    machine: &Value,
    topology: &str,
    rounds: usize,
    seconds: u64,
    impls: &[String],
    reference: &str,
    medians: &BTreeMap<String, BTreeMap<String, f64>>,
    notes: &[String],
) -> String {
    // Ratios need the reference's own column.
    let others = if impls.iter().any(|i| i == reference) { others(impls, reference) } else { vec![] };
    // Runs before these fields were recorded give the model name alone.
    let cpu = match (machine["cpu_family"].as_str(), machine["cpu_model"].as_str(), machine["cpu_features"].as_array())
    {
        (Some(family), Some(model), Some(features)) => {
            let features: Vec<&str> = features.iter().filter_map(|f| f.as_str()).collect();
            format!(
                "{} (family {family} model {model}; {})",
                machine["cpu"].as_str().unwrap_or("?"),
                if features.is_empty() {
                    "none of AES-NI, AVX2, AVX-512, VAES".to_string()
                } else {
                    features.join(" ")
                }
            )
        }
        _ => machine["cpu"].as_str().unwrap_or("?").to_string(),
    };
    let mut t = format!(
        "Machine: {} cores, {cpu}, kernel {}; {rounds} rounds of {seconds} s per test, medians.\n\nTopology: {}.\n\n",
        machine["cores"],
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
        t += &format!(" {reference} ÷ {o} |");
    }
    t += &format!("\n|---|{}\n", "---|".repeat(impls.len() + others.len()));
    for (key, label, _) in METRICS {
        // A metric the run did not measure (a ping-only run) has no row.
        if impls.iter().all(|i| value(medians, i, key).is_nan()) {
            continue;
        }
        t += &format!("| {label} |");
        for i in impls {
            t += &format!(" {:.3} |", value(medians, i, key));
        }
        for o in &others {
            t += &format!(" {:.2} |", value(medians, reference, key) / value(medians, o, key));
        }
        t.push('\n');
    }
    // The RTT averages the replies only, so lost pings are said.
    let lost: Vec<String> = impls
        .iter()
        .filter(|i| value(medians, i, "ping_lost") > 0.0)
        .map(|i| format!("{i} {}", value(medians, i, "ping_lost")))
        .collect();
    if !lost.is_empty() {
        t += &format!("\nPings lost, median per round (the RTT is of the replies): {}.\n", lost.join(", "));
    }
    t
}

/// `--replot RUN.json`: the `.md` and `.svg` of a saved run, rebuilt.
pub fn replot(path: &Path) -> anyhow::Result<()> {
    let run: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let medians: BTreeMap<String, BTreeMap<String, f64>> = serde_json::from_value(run["medians"].clone())?;
    // Runs before the topology option were all direct, and did not record
    // their implementations: Causeway first, then the ratio order. Runs
    // before --reference divided by Causeway.
    let topology = run["topology"].as_str().unwrap_or("direct");
    let reference = run["reference"].as_str().unwrap_or(crate::DEFAULT_REFERENCE);
    let impls: Vec<String> = match run["impls"].as_array() {
        Some(a) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
        None => {
            let mut all: Vec<String> = medians.keys().cloned().collect();
            all.sort_by_key(|i| (i != reference, RATIO_ORDER.iter().position(|r| r == i).unwrap_or(usize::MAX)));
            all
        }
    };
    if impls.is_empty() {
        bail!("{} holds no results", path.display());
    }
    let notes: Vec<String> = run["notes"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let t = table(
        &run["machine"],
        topology,
        run["rounds"].as_u64().unwrap_or(0) as usize,
        run["seconds"].as_u64().unwrap_or(0),
        &impls,
        reference,
        &medians,
        &notes,
    );
    println!("{t}");
    write_whole(&path.with_extension("md"), &t)?;
    svg(&path.with_extension("svg"), topology, &impls, reference, &medians)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn medians(v: &[(&str, f64)]) -> BTreeMap<String, BTreeMap<String, f64>> {
        v.iter().map(|(i, x)| (i.to_string(), METRICS.iter().map(|(k, _, _)| (k.to_string(), *x)).collect())).collect()
    }

    #[test]
    fn others_leave_out_the_reference_strongest_first() {
        let impls = names(&["causeway", "boringtun", "strongswan", "wireguard-go-modern"]);
        assert_eq!(others(&impls, "causeway"), ["wireguard-go-modern", "boringtun", "strongswan"]);
        let impls = names(&["causeway-esp", "causeway-esp-raw", "strongswan", "causeway"]);
        assert_eq!(others(&impls, "causeway-esp"), ["causeway", "causeway-esp-raw", "strongswan"]);
        // A reference from RATIO_ORDER is not divided by itself either.
        let impls = names(&["causeway", "wireguard-go-modern", "wireguard-go"]);
        assert_eq!(others(&impls, "wireguard-go-modern"), ["causeway", "wireguard-go"]);
    }

    #[test]
    fn table_divides_the_reference_by_each_other() {
        let machine = json!({"cores": 2, "cpu": "test", "kernel": "6"});
        let impls = names(&["causeway-esp", "causeway", "strongswan"]);
        let m = medians(&[("causeway-esp", 3.0), ("causeway", 6.0), ("strongswan", 1.5)]);
        let t = table(&machine, "direct", 1, 3, &impls, "causeway-esp", &m, &["a note".into()]);
        assert!(t.contains("a note.\n\n"), "{t}");
        let header = t.lines().find(|l| l.starts_with("| metric |")).unwrap();
        assert_eq!(
            header,
            "| metric | causeway-esp | causeway | strongswan | causeway-esp ÷ causeway | causeway-esp ÷ strongswan |"
        );
        let row = t.lines().find(|l| l.starts_with("| TCP, 1 stream")).unwrap();
        assert!(row.ends_with("| 3.000 | 6.000 | 1.500 | 0.50 | 2.00 |"), "{row}");
    }

    #[test]
    fn the_machine_line_names_the_cpus_vector_and_crypto_features() {
        let m = medians(&[("causeway", 1.0)]);
        let impls = names(&["causeway"]);
        let machine = json!({"cores": 2, "cpu": "AMD EPYC", "kernel": "6", "cpu_family": "23", "cpu_model": "49",
            "cpu_features": ["aes", "pclmulqdq", "avx2"]});
        let t = table(&machine, "direct", 1, 3, &impls, "causeway", &m, &[]);
        assert!(t.starts_with("Machine: 2 cores, AMD EPYC (family 23 model 49; aes pclmulqdq avx2), kernel 6;"), "{t}");
        // A run recorded before the fields were.
        let old = json!({"cores": 2, "cpu": "AMD EPYC", "kernel": "6"});
        let t = table(&old, "direct", 1, 3, &impls, "causeway", &m, &[]);
        assert!(t.starts_with("Machine: 2 cores, AMD EPYC, kernel 6;"), "{t}");
    }

    #[test]
    fn lost_pings_are_said_under_the_table() {
        let m: BTreeMap<String, BTreeMap<String, f64>> = [
            ("causeway", [("ping_rtt_ms", 0.2), ("ping_lost", 0.0)]),
            ("boringtun", [("ping_rtt_ms", 0.19), ("ping_lost", 2.0)]),
        ]
        .into_iter()
        .map(|(i, v)| (i.to_string(), v.into_iter().map(|(k, x)| (k.to_string(), x)).collect()))
        .collect();
        let t = table(&Value::Null, "direct", 1, 5, &names(&["causeway", "boringtun"]), "causeway", &m, &[]);
        assert!(t.contains("Pings lost, median per round (the RTT is of the replies): boringtun 2."), "{t}");
        assert!(!t.contains("causeway 0"), "{t}");
        let none = table(&Value::Null, "direct", 1, 5, &names(&["causeway"]), "causeway", &m, &[]);
        assert!(!none.contains("Pings lost"), "{none}");
    }

    #[test]
    fn a_metric_no_implementation_measured_has_no_row() {
        let machine = json!({"cores": 2, "cpu": "test", "kernel": "6"});
        let impls = names(&["causeway", "boringtun"]);
        let ping = |x: f64| BTreeMap::from([("ping_rtt_ms".to_string(), x)]);
        let m = BTreeMap::from([("causeway".to_string(), ping(0.2)), ("boringtun".to_string(), ping(0.25))]);
        let t = table(&machine, "direct", 1, 3, &impls, "causeway", &m, &[]);
        let rows: Vec<&str> = t.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| metric")).collect();
        assert_eq!(rows, ["| Ping RTT (ms) | 0.200 | 0.250 | 0.80 |"], "{t}");
    }

    #[test]
    fn default_reference_keeps_the_old_table_and_caption() {
        let machine = json!({"cores": 2, "cpu": "test", "kernel": "6"});
        let impls = names(&["causeway", "wireguard-go"]);
        let m = medians(&[("causeway", 2.0), ("wireguard-go", 1.0)]);
        let t = table(&machine, "direct", 1, 3, &impls, "causeway", &m, &[]);
        assert!(t.contains("| metric | causeway | wireguard-go | causeway ÷ wireguard-go |\n"), "{t}");
        assert_eq!(
            caption("direct", "causeway", "wireguard-go"),
            "Causeway vs other userspace tunnels (direct): medians ÷ wireguard-go; ↑ higher is better, ↓ lower"
        );
        assert!(caption("routed", "causeway-esp", "causeway").starts_with("causeway-esp vs the others (routed)"));
        // Without the reference's column there is nothing to divide.
        let t = table(&machine, "direct", 1, 3, &names(&["wireguard-go"]), "causeway", &m, &[]);
        assert!(!t.contains('÷'), "{t}");
    }
}
