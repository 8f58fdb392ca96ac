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

/// One comparison row: both values, their ratio, and which side is better.
fn row(out: &mut String, key: &str, va: &Val, vb: &Val) {
    let ratio = match (va.num(), vb.num()) {
        (Some(x), Some(y)) if y != 0.0 => format!("{:.2}", x / y),
        _ => "-".into(),
    };
    let mark = match (va.num(), vb.num()) {
        // Inputs are equal by design; differences under 2 % are noise.
        (Some(x), Some(y)) if !is_input(key) && (x - y).abs() > 0.02 * x.abs().max(y.abs()) => {
            let left_better = if lower_is_better(key) { x < y } else { x > y };
            if left_better { " <" } else { " >" }
        }
        _ => "",
    };
    let _ = writeln!(
        out,
        "  {:<34} {:>14} {:>14} {:>9}{mark}",
        describe(key),
        va.human(),
        vb.human(),
        ratio
    );
}

/// Prints LEFT and RIGHT result files (one JSON object per line) side by side, matched by
/// label: a headline table first, then every figure.
pub fn compare(left: &str, right: &str, names: (&str, &str)) -> Result<String, String> {
    let load = |path: &str| -> Result<Vec<Report>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
        Ok(text
            .lines()
            .filter(|l| l.trim_start().starts_with('{'))
            .filter_map(Report::from_json)
            .collect())
    };
    let (a, b) = (load(left)?, load(right)?);
    let pairs: Vec<(String, &Report, Option<&Report>)> = a
        .iter()
        .map(|ra| {
            let label = ra.get("label").cloned().unwrap_or(Val::Null);
            (
                label.human(),
                ra,
                b.iter().find(|r| r.get("label") == Some(&label)),
            )
        })
        .collect();
    let header = format!(
        "  {:<34} {:>14} {:>14} {:>9}\n",
        "", names.0, names.1, "ratio"
    );
    let mut out = String::from("\n######## headline figures ########\n");
    for full in [false, true] {
        if full {
            out.push_str("\n######## all figures ########\n");
        }
        for (label, ra, rb) in &pairs {
            let _ = write!(out, "\n== {label} ==\n{header}");
            let keys: Vec<&str> = if full {
                ra.fields.iter().map(|(k, _)| k.as_str()).collect()
            } else {
                HEADLINE.to_vec()
            };
            for k in keys {
                let va = ra.get(k).cloned().unwrap_or(Val::Null);
                let vb = rb.and_then(|r| r.get(k)).cloned().unwrap_or(Val::Null);
                if k == "label" || (va == Val::Null && vb == Val::Null) {
                    continue;
                }
                row(&mut out, k, &va, &vb);
            }
        }
    }
    let _ = writeln!(
        out,
        "\nratio = {a} / {b}; '<' marks where {a} is better, '>' where {b} is.",
        a = names.0,
        b = names.1
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
