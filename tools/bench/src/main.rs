//! meteor-bench: subscriber fan-out, latency and long-poll benchmark for meteord and other Comet servers.

mod hist;
mod net;
mod opts;
mod procstat;
mod publish;
mod report;
mod run;
mod wire;
mod worker;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let program = args.first().map(String::as_str).unwrap_or("meteor-bench");
    let rest = args.get(1..).unwrap_or(&[]);
    if rest.first().map(String::as_str) == Some("compare") {
        return compare(&rest[1..], program);
    }
    let opts = match opts::parse(rest) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{}", opts::usage(program));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("meteor-bench: {e}\n\n{}", opts::usage(program));
            return ExitCode::from(2);
        }
    };
    if let Some((first, count)) = opts.worker {
        return match worker::run(&opts, first, count) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meteor-bench worker {first}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run::run(&opts, rest) {
        Ok(r) => {
            if opts.json {
                println!("{}", r.to_json());
            } else {
                println!("meteor-bench results\n{}", r.to_table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meteor-bench: {e}");
            if opts.json {
                let mut r = report::Report::default();
                r.set("label", report::Val::Str(opts.label.clone()));
                r.set("error", report::Val::Str(e));
                println!("{}", r.to_json());
            }
            ExitCode::FAILURE
        }
    }
}

/// `compare LEFT RIGHT [--names A,B]`: side-by-side table of two JSON-lines result files.
fn compare(args: &[String], program: &str) -> ExitCode {
    let mut files = Vec::new();
    let mut names = ("left".to_string(), "right".to_string());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--names" {
            if let Some((x, y)) = it.next().and_then(|v| v.split_once(',')) {
                names = (x.to_string(), y.to_string());
            }
        } else {
            files.push(a.clone());
        }
    }
    let [left, right] = files.as_slice() else {
        eprintln!("usage: {program} compare LEFT.jsonl RIGHT.jsonl [--names A,B]");
        return ExitCode::from(2);
    };
    match report::compare(left, right, (&names.0, &names.1)) {
        Ok(s) => {
            print!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meteor-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
