//! `backazon ls SNAPSHOT[:PATH]`: the files of a snapshot, like `find`.

use anyhow::Result;
use backazon_engine::restore::{self};
use backazon_engine::tree::{Node, NodeKind};
use backazon_engine::Id;

use super::split_spec;
use crate::ctx::{warn, Ctx};
use crate::format::{self};

fn node_json(path: &str, n: &Node) -> serde_json::Value {
    let mut v = serde_json::json!({
        "path": path,
        "name": n.name.to_string_lossy(),
        "type": n.kind,
        "size": n.size,
        "mode": n.mode,
        "uid": n.uid,
        "gid": n.gid,
        "mtime": format::nanos_to_rfc3339(n.mtime),
    });
    if let Some(t) = &n.target {
        v["target"] = t.to_string_lossy().into();
    }
    v
}

pub fn run(ctx: &Ctx, spec: &str, long: bool) -> Result<u8> {
    let repo = ctx.open()?;
    let (snap, path) = split_spec(spec);
    let path = &backazon_engine::sys::snapshot_path(path);
    let snap = repo.find_snapshot(snap)?;
    let loaded = repo.load_index()?;
    let index = &loaded.index;
    let base = path.trim_end_matches('/');
    let start = restore::find_node(&repo, index, &snap.snapshot.tree, base)?;
    let mut out = Vec::new();
    let mut stack: Vec<(String, Id)> = Vec::new();
    match &start {
        None => stack.push((String::new(), snap.snapshot.tree)),
        Some(n) => {
            out.push((base.to_string(), n.clone()));
            if let Some(sub) = n.subtree {
                stack.push((base.to_string(), sub));
            }
        }
    }
    let json = ctx.global.json;
    // `--json` is one array, written an entry a line as the walk goes (a folder of
    // millions of entries is never held whole here either).
    let mut first = true;
    if json {
        out!("[");
    }
    let mut emit = |path: &str, n: &Node| {
        if json {
            let sep = if std::mem::take(&mut first) { "" } else { "," };
            out!("{sep}{}", node_json(path, n));
        } else if long {
            out!(
                "{} {:>5} {:>5} {:>12} {}  {}{}",
                format::mode_string(n),
                n.uid,
                n.gid,
                n.size,
                format::nanos_to_local(n.mtime),
                format::printable(path, false),
                n.target
                    .as_ref()
                    .map(|t| format!(" -> {}", format::printable(&t.to_string_lossy(), false)))
                    .unwrap_or_default()
            );
        } else {
            // One line per entry, whatever the name holds (`--json` gives names exactly).
            out!("{}", format::printable(path, false));
        }
    };
    for (p, n) in &out {
        emit(p, n);
    }
    // Depth-first, in name order, like `find`; with a stack of its own (a snapshot may
    // nest folders deeper than the thread's stack would take).
    for (p, t) in stack {
        let mut todo = vec![(p, t, 0usize)];
        while let Some((path, tree, depth)) = todo.pop() {
            // Entry by entry: a folder of millions of entries is never held whole.
            let mut subs = Vec::new();
            repo.for_each_tree_node(index, &tree, &mut |n| {
                let p = format!("{path}/{}", n.name.to_string_lossy());
                emit(&p, &n);
                if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                    if depth + 1 >= backazon_engine::MAX_DEPTH {
                        warn(&format!(
                            "{p}: folders nested deeper than {} levels are not listed",
                            backazon_engine::MAX_DEPTH
                        ));
                    } else {
                        subs.push((p, sub, depth + 1));
                    }
                }
                Ok(())
            })?;
            todo.extend(subs.into_iter().rev());
        }
    }
    if json {
        out!("]");
    }
    Ok(0)
}
