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

/// `compare A B [C ...] [--names a,b,c]`: side-by-side table of JSON-lines
/// result files, the first one's ratio to each other.
fn compare(args: &[String], program: &str) -> ExitCode {
    let mut files = Vec::new();
    let mut names = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--names" {
            if let Some(list) = it.next() {
                names = list.split(',').map(str::to_string).collect();
            }
        } else {
            files.push(a.clone());
        }
    }
    if files.len() < 2 {
        eprintln!("usage: {program} compare A.jsonl B.jsonl [C.jsonl ...] [--names a,b,c]");
        return ExitCode::from(2);
    }
    if names.len() != files.len() {
        names = (1..=files.len()).map(|i| format!("file{i}")).collect();
    }
    match report::compare(&files, &names) {
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
