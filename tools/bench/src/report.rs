//! Results: a flat list of named values, printed as a table or one JSON object,
//! and the side-by-side comparison of two result files.

use std::fmt::Write as _;

/// One reported value.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Int(i64),
    Num(f64),
    Str(String),
    Null,
}

impl Val {
    fn num(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Num(f) => Some(*f),
            _ => None,
        }
    }

    fn human(&self) -> String {
        match self {
            Val::Int(i) => i.to_string(),
            Val::Num(f) if f.abs() >= 100.0 => format!("{f:.0}"),
            Val::Num(f) => format!("{f:.3}"),
            Val::Str(s) => s.clone(),
            Val::Null => "-".into(),
        }
    }

    fn json(&self) -> String {
        match self {
            Val::Int(i) => i.to_string(),
            Val::Num(f) if f.is_finite() => format!("{f:.4}"),
            Val::Num(_) | Val::Null => "null".into(),
            Val::Str(s) => {
                let mut o = String::from("\"");
                for c in s.chars() {
                    match c {
                        '"' => o.push_str("\\\""),
                        '\\' => o.push_str("\\\\"),
                        c if (c as u32) < 0x20 => {
                            let _ = write!(o, "\\u{:04x}", c as u32);
                        }
                        c => o.push(c),
                    }
                }
                o.push('"');
                o
            }
        }
    }
}

/// Ordered `key -> value` pairs.
#[derive(Default, Debug)]
pub struct Report {
    pub fields: Vec<(String, Val)>,
}

impl Report {
    pub fn set(&mut self, key: &str, v: Val) {
        self.fields.push((key.to_string(), v));
    }

    pub fn int(&mut self, key: &str, v: u64) {
        self.set(key, Val::Int(v as i64));
    }

    pub fn num(&mut self, key: &str, v: Option<f64>) {
        self.set(key, v.filter(|f| f.is_finite()).map_or(Val::Null, Val::Num));
    }

    pub fn get(&self, key: &str) -> Option<&Val> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn to_json(&self) -> String {
        let body: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("\"{k}\":{}", v.json()))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    pub fn to_table(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.fields {
            let _ = writeln!(s, "  {:<34} {}", describe(k), v.human());
        }
        s
    }

    /// Parses one flat JSON object as written by [`Report::to_json`].
    pub fn from_json(line: &str) -> Option<Report> {
        let mut p = Parser {
            s: line.trim().as_bytes(),
            i: 0,
        };
        p.expect(b'{')?;
        let mut r = Report::default();
        p.ws();
        if p.peek() == Some(b'}') {
            return Some(r);
        }
        loop {
            p.ws();
            let Val::Str(k) = p.string()? else {
                return None;
            };
            p.ws();
            p.expect(b':')?;
            p.ws();
            let v = p.value()?;
            r.fields.push((k, v));
            p.ws();
            match p.next()? {
                b',' => continue,
                b'}' => return Some(r),
                _ => return None,
            }
        }
    }
}

/// Minimal parser for flat JSON objects (strings, numbers, null).
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }
    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }
    fn string(&mut self) -> Option<Val> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.next()? {
                b'"' => return Some(Val::Str(String::from_utf8_lossy(&out).into_owned())),
                b'\\' => match self.next()? {
                    b'u' => {
                        let hex = std::str::from_utf8(self.s.get(self.i..self.i + 4)?).ok()?;
                        self.i += 4;
                        let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                        out.extend_from_slice(c.to_string().as_bytes());
                    }
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    c => out.push(c),
                },
                c => out.push(c),
            }
        }
    }
    fn value(&mut self) -> Option<Val> {
        match self.peek()? {
            b'"' => self.string(),
            b'n' => {
                self.i += 4;
                Some(Val::Null)
            }
            _ => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_digit() || b"+-.eE".contains(&c))
                {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.s[start..self.i]).ok()?;
                if let Ok(i) = t.parse::<i64>() {
                    Some(Val::Int(i))
                } else {
                    t.parse::<f64>().ok().map(Val::Num)
                }
            }
        }
    }
}

/// Human description of a report key.
fn describe(key: &str) -> &str {
    match key {
        "label" => "scenario",
        "mode" => "mode",
        "subscribers" => "subscribers requested",
        "connected" => "subscribers connected",
        "connect_failed" => "subscribers failed to connect",
        "connect_s" => "time to connect all (s)",
        "listen_overflows" => "listen-queue overflows (kernel-wide)",
        "events" => "events requested",
        "published" => "events published (acknowledged)",
        "publish_errors" => "publish errors",
        "rate" => "publish rate (events/s, 0 = max)",
        "publish_s" => "publishing took (s)",
        "expected" => "expected deliveries (N x M)",
        "delivered" => "deliveries",
        "lost" => "LOST deliveries",
        "duplicates" => "duplicate deliveries",
        "disconnected" => "subscribers closed by server",
        "delivery_s" => "first publish to last delivery (s)",
        "deliveries_per_s" => "deliveries per second",
        "cycles" => "long-poll cycles completed",
        "cycles_per_s" => "long-poll cycles per second",
        "connections" => "long-poll connections opened",
        "lp_errors" => "long-poll failed requests",
        "lat_p50_ms" => "latency p50 (ms)",
        "lat_p99_ms" => "latency p99 (ms)",
        "lat_p999_ms" => "latency p99.9 (ms)",
        "lat_max_ms" => "latency max (ms)",
        "rss_idle_kb" => "server RSS idle (KiB)",
        "rss_subscribed_kb" => "server RSS with N idle subs (KiB)",
        "rss_per_sub_b" => "server RSS per idle subscriber (B)",
        "rss_peak_kb" => "server RSS peak in fan-out (KiB)",
        "cpu_s" => "server CPU during fan-out (s)",
        "deliveries_per_cpu_s" => "deliveries per server CPU-second",
        "client_cpu_s" => "bench client CPU in fan-out (s)",
        "client_workers" => "bench worker processes",
        "error" => "error",
        other => other,
    }
}

/// Scenario inputs rather than results.
fn is_input(key: &str) -> bool {
    matches!(
        key,
        "subscribers" | "events" | "rate" | "expected" | "publish_s"
    )
}

/// Metrics where a smaller number is better (for the comparison's verdict column).
fn lower_is_better(key: &str) -> bool {
    key.starts_with("lat_")
        || key.starts_with("rss_")
        || matches!(
            key,
            "lost"
                | "duplicates"
                | "disconnected"
                | "connect_failed"
                | "publish_errors"
                | "cpu_s"
                | "connect_s"
                | "delivery_s"
                | "lp_errors"
                | "connections"
                | "client_cpu_s"
                | "listen_overflows"
        )
}

/// The figures each scenario is judged by, shown first in the comparison.
const HEADLINE: &[&str] = &[
    "lost",
    "connect_failed",
    "listen_overflows",
    "rss_per_sub_b",
    "rss_peak_kb",
    "lat_p99_ms",
    "deliveries_per_s",
    "deliveries_per_cpu_s",
    "cycles_per_s",
    "error",
];

/// One comparison row: every file's value, the first one's ratio to each
/// other, and whether the first or the second is better.
fn row(out: &mut String, key: &str, vals: &[Val]) {
    let _ = write!(out, "  {:<34}", describe(key));
    for v in vals {
        let _ = write!(out, " {:>14}", v.human());
    }
    let first = vals.first().and_then(Val::num);
    for v in &vals[1..] {
        let ratio = match (first, v.num()) {
            (Some(x), Some(y)) if y != 0.0 => format!("{:.2}", x / y),
            _ => "-".into(),
        };
        let _ = write!(out, " {ratio:>9}");
    }
    let mark = match (first, vals.get(1).and_then(Val::num)) {
        // Inputs are equal by design; differences under 2 % are noise.
        (Some(x), Some(y)) if !is_input(key) && (x - y).abs() > 0.02 * x.abs().max(y.abs()) => {
            let first_better = if lower_is_better(key) { x < y } else { x > y };
            if first_better { " <" } else { " >" }
        }
        _ => "",
    };
    let _ = writeln!(out, "{mark}");
}

/// Prints result files (one JSON object per line) side by side, matched by
/// the first file's labels: a headline table first, then every figure.
/// `names` labels the columns, one per file.
pub fn compare(files: &[String], names: &[String]) -> Result<String, String> {
    let load = |path: &String| -> Result<Vec<Report>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
        Ok(text
            .lines()
            .filter(|l| l.trim_start().starts_with('{'))
            .filter_map(Report::from_json)
            .collect())
    };
    let runs = files.iter().map(load).collect::<Result<Vec<_>, _>>()?;
    let (Some(first), Some(_)) = (runs.first(), runs.get(1)) else {
        return Err("compare needs at least two result files".into());
    };
    let mut header = format!("  {:<34}", "");
    for name in names {
        let _ = write!(header, " {name:>14}");
    }
    for name in &names[1..] {
        let _ = write!(header, " {:>9}", format!("/{name}"));
    }
    header.push('\n');
    let mut out = String::from("\n######## headline figures ########\n");
    for full in [false, true] {
        if full {
            out.push_str("\n######## all figures ########\n");
        }
        for report in first {
            let label = report.get("label").cloned().unwrap_or(Val::Null);
            let same: Vec<Option<&Report>> = runs
                .iter()
                .map(|run| run.iter().find(|r| r.get("label") == Some(&label)))
                .collect();
            let _ = write!(out, "\n== {} ==\n{header}", label.human());
            let keys: Vec<&str> = if full {
                report.fields.iter().map(|(k, _)| k.as_str()).collect()
            } else {
                HEADLINE.to_vec()
            };
            for k in keys {
                let vals: Vec<Val> = same
                    .iter()
                    .map(|r| r.and_then(|r| r.get(k)).cloned().unwrap_or(Val::Null))
                    .collect();
                if k == "label" || vals.iter().all(|v| *v == Val::Null) {
                    continue;
                }
                row(&mut out, k, &vals);
            }
        }
    }
    let _ = writeln!(
        out,
        "\n/<name> = {a} / <name>; '<' marks where {a} is better than {b}, '>' where {b} is.",
        a = names[0],
        b = names[1]
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_roundtrip() {
        let mut r = Report::default();
        r.set("label", Val::Str("a \"b\"\n".into()));
        r.int("n", 5);
        r.num("x", Some(1.5));
        r.num("y", None);
        let back = Report::from_json(&r.to_json()).expect("parses");
        assert_eq!(back.get("label"), Some(&Val::Str("a \"b\"\n".into())));
        assert_eq!(back.get("n"), Some(&Val::Int(5)));
        assert_eq!(back.get("x"), Some(&Val::Num(1.5)));
        assert_eq!(back.get("y"), Some(&Val::Null));
    }
}
