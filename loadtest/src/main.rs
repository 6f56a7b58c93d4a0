//! `gavel-load` binary: parse flags, run, print the table, write the JSON, set the exit code
//! (0 ok, 2 SLO breached, 1 run failed, 64 bad flags).

use std::process::ExitCode;

use clap::Parser;
use gavel_load::cli::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("gavel-load: {e}");
        return ExitCode::from(64);
    }
    if let Some(ca) = &args.ca_file {
        gavel_load::tls::trust(ca);
    }
    let report = match gavel_load::app::execute(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gavel-load: {e}");
            return ExitCode::from(1);
        }
    };
    print!("{}", report.render());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.to_json()).expect("report serializes");
        if let Err(e) = std::fs::File::create(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
        {
            eprintln!("gavel-load: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    if let Some(path) = &args.hdr_log {
        let written = std::fs::File::create(path)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                let mut w = std::io::BufWriter::new(f);
                report.write_hdr_log(&mut w)?;
                std::io::Write::flush(&mut w).map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            eprintln!("gavel-load: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    if let Some(path) = &args.plot {
        if let Err(e) = gavel_load::plot::plot(&report, path) {
            eprintln!("gavel-load: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    if report.slo_breach().is_some() {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
