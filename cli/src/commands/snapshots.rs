//! `backazon snapshots`: the list of snapshots.

use anyhow::Result;

use crate::ctx::{warn, Ctx, EXIT_PARTIAL};
use crate::format::{bytes, local_time};

pub fn run(ctx: &Ctx) -> Result<u8> {
    let repo = ctx.open()?;
    let (snaps, problems) = repo.snapshots()?;
    for p in &problems {
        warn(p);
    }
    if ctx.global.json {
        let list: Vec<_> = snaps
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(&s.snapshot).expect("snapshot serialises");
                v["id"] = s.id.to_hex().into();
                v["short_id"] = s.id.short().into();
                v
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    if !ctx.global.quiet {
        out!(
            "{:<8}  {:<19}  {:<16}  {:<12}  {:>10}  Paths",
            "ID",
            "Time",
            "Host",
            "Tags",
            "Size"
        );
        for s in &snaps {
            let sn = &s.snapshot;
            out!(
                "{:<8}  {:<19}  {:<16}  {:<12}  {:>10}  {}",
                s.id.short(),
                sn.timestamp()
                    .map(local_time)
                    .unwrap_or_else(|| sn.time.clone()),
                sn.hostname,
                sn.tags.join(","),
                bytes(sn.summary.total_bytes),
                sn.paths.join(" ")
            );
        }
        out!("{} snapshots", snaps.len());
    }
    Ok(if problems.is_empty() { 0 } else { EXIT_PARTIAL })
}
