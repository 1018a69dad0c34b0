//! `backazon check [--read-data]`.

use anyhow::Result;
use backazon_engine::check;

use crate::ctx::{warn, Ctx, EXIT_FATAL};
use crate::format::{bytes, StepDisplay};

pub fn run(ctx: &Ctx, read_data: bool) -> Result<u8> {
    let repo = ctx.open()?;
    let shown = StepDisplay::start(
        ctx.show_progress(),
        ctx.global.json && !ctx.global.quiet,
        !ctx.global.quiet && !ctx.global.json && !ctx.show_progress(),
    );
    let report = check::check(&repo, read_data, &shown.steps);
    drop(shown);
    let report = report?;
    if ctx.global.json {
        out!("{}", serde_json::to_string(&report)?);
    } else {
        for w in &report.warnings {
            warn(w);
        }
        for e in &report.errors {
            eprintln!("error: {e}");
        }
        ctx.say(format!(
            "{} snapshots, {} trees, {} packs, {} blobs{}",
            report.snapshots,
            report.trees,
            report.packs,
            report.blobs,
            if read_data {
                format!(", {} read", bytes(report.bytes_read))
            } else {
                String::new()
            }
        ));
        if report.is_ok() {
            ctx.say("no errors were found");
        }
    }
    if report.is_ok() {
        Ok(0)
    } else {
        if !ctx.global.json {
            eprintln!("{} errors found", report.errors.len());
        }
        Ok(EXIT_FATAL)
    }
}
