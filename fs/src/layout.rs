//! The folders above the snapshots: `by-date/`, `by-job/<job>/`, `by-id/` and `latest/`,
//! built from the repository's snapshot list, with names that are valid on Windows too.
//! Inode numbers of these folders stay the same for the whole mount, across rebuilds.

use std::collections::HashMap;
use std::sync::Arc;

use backazon_engine::snapshot::SnapshotEntry;
use backazon_engine::Id;

use crate::Ino;

/// The mounted root's inode.
pub const ROOT_INO: Ino = 1;
/// Inodes below this number are layout folders; from here on they name tree entries.
pub const FIRST_TREE_INO: Ino = 1 << 32;

/// One snapshot as the drive shows it.
#[derive(Debug)]
pub struct SnapInfo {
    pub id: Id,
    pub tree: Id,
    /// Nanoseconds since the Unix epoch.
    pub time: i64,
}

#[derive(Debug)]
pub enum VKind {
    /// A folder of folders: children sorted by name.
    Dir(Vec<(Vec<u8>, Ino)>),
    /// A snapshot's top folder: its contents come from the snapshot's root tree.
    Snapshot(Arc<SnapInfo>),
}

#[derive(Debug)]
pub struct VNode {
    pub parent: Ino,
    pub name: Vec<u8>,
    pub kind: VKind,
    /// Nanoseconds since the Unix epoch.
    pub mtime: i64,
}

/// The layout folders as of the last look at the repository's snapshot list.
#[derive(Default)]
pub struct Layout {
    pub nodes: HashMap<Ino, VNode>,
    /// Which snapshots this layout shows (object names), to tell when to rebuild.
    pub shown: Vec<String>,
}

/// Hands out inode numbers for layout paths, the same number for the same path all mount long.
pub struct InoMap {
    by_key: HashMap<String, Ino>,
    next: Ino,
}

impl Default for InoMap {
    fn default() -> Self {
        InoMap {
            by_key: HashMap::new(),
            next: ROOT_INO + 1,
        }
    }
}

impl InoMap {
    fn get(&mut self, key: String) -> Ino {
        if let Some(&i) = self.by_key.get(&key) {
            return i;
        }
        let i = self.next;
        // Layout folders are a handful per snapshot: 2^32 of them is out of reach.
        self.next += 1;
        assert!(self.next < FIRST_TREE_INO, "too many layout folders");
        self.by_key.insert(key, i);
        i
    }
}

/// A name that Windows accepts too: no `< > : " / \ | ? *` or control characters, no
/// trailing dot or space, never empty.
pub fn portable_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| match c {
            '<' | '>' | ':' | '"' | '/' | '\\' | '|' | '?' | '*' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    while out.ends_with('.') || out.ends_with(' ') {
        out.pop();
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// `2026-11-22 02.00.05`, in the machine's time zone (no `:`, so valid on Windows).
fn folder_time(nanos: i64) -> String {
    let ts = jiff::Timestamp::from_nanosecond(nanos as i128).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H.%M.%S")
        .to_string()
}

/// Adds `name` to a folder's children, with ` (2)`, ` (3)`… when it is taken.
fn unique(children: &[(String, String)], name: String) -> String {
    if !children.iter().any(|(n, _)| *n == name) {
        return name;
    }
    (2..)
        .map(|i| format!("{name} ({i})"))
        .find(|n| !children.iter().any(|(c, _)| c == n))
        .expect("a free name")
}

/// Builds the layout for `snaps` (oldest first). A folder's modification time is when
/// its list of entries last changed (`now` if it differs from `previous`; at first the
/// newest snapshot below it): kernels compare it to tell a cached listing is stale.
pub fn build(snaps: &[SnapshotEntry], inos: &mut InoMap, previous: &Layout, now: i64) -> Layout {
    // Folder path -> (child name, child key), built as strings first.
    let mut dirs: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut snap_keys: HashMap<String, Arc<SnapInfo>> = HashMap::new();
    let mut latest: HashMap<String, (String, Arc<SnapInfo>)> = HashMap::new();
    for top in ["by-date", "by-id", "by-job", "latest"] {
        dirs.entry(String::new())
            .or_default()
            .push((top.to_string(), top.to_string()));
        dirs.entry(top.to_string()).or_default();
    }
    for s in snaps {
        let info = Arc::new(SnapInfo {
            id: s.id,
            tree: s.snapshot.tree,
            time: s
                .snapshot
                .timestamp()
                .map(|t| t.as_nanosecond() as i64)
                .unwrap_or(0),
        });
        let group = portable_name(
            s.snapshot
                .job
                .as_deref()
                .filter(|j| !j.is_empty())
                .unwrap_or(&s.snapshot.hostname),
        );
        let when = folder_time(info.time);
        let job_dir = format!("by-job/{group}");
        if !dirs.contains_key(&job_dir) {
            dirs.get_mut("by-job")
                .expect("by-job")
                .push((group.clone(), job_dir.clone()));
        }
        // Snapshot folders are keyed by their path and snapshot id, so a folder's inode
        // always shows the same snapshot.
        let mut add = |dir: &str, name: String| {
            let children = dirs.entry(dir.to_string()).or_default();
            let name = unique(children, name);
            let key = format!("{dir}/{name}\0{}", s.id);
            children.push((name, key.clone()));
            snap_keys.insert(key, info.clone());
        };
        add("by-date", format!("{when} {group}"));
        add("by-id", s.id.short());
        add(&job_dir, when);
        latest.insert(
            group.clone(),
            (format!("latest/{group}\0{}", s.id), info.clone()),
        );
    }
    for (group, (key, info)) in latest {
        dirs.get_mut("latest")
            .expect("latest")
            .push((group, key.clone()));
        snap_keys.insert(key, info);
    }

    let mut layout = Layout {
        shown: Vec::new(),
        nodes: HashMap::new(),
    };
    // Every folder, then every snapshot folder, as nodes with inode numbers.
    let mut parents: HashMap<String, (Ino, Vec<u8>)> = HashMap::new();
    for (dir, children) in &dirs {
        let ino = if dir.is_empty() {
            ROOT_INO
        } else {
            inos.get(dir.clone())
        };
        for (name, key) in children {
            parents.insert(key.clone(), (ino, name.as_bytes().to_vec()));
        }
    }
    for (dir, children) in dirs {
        let ino = if dir.is_empty() {
            ROOT_INO
        } else {
            inos.get(dir.clone())
        };
        let mut kids: Vec<(Vec<u8>, Ino)> = children
            .iter()
            .map(|(name, key)| (name.as_bytes().to_vec(), inos.get(key.clone())))
            .collect();
        kids.sort();
        let mtime = match previous.nodes.get(&ino) {
            Some(VNode {
                kind: VKind::Dir(old),
                mtime,
                ..
            }) if *old == kids => *mtime,
            Some(_) => now,
            None if previous.nodes.is_empty() => snaps.last().map_or(now, |s| {
                s.snapshot
                    .timestamp()
                    .map_or(now, |t| t.as_nanosecond() as i64)
            }),
            None => now,
        };
        let (parent, name) = parents.get(&dir).cloned().unwrap_or((ROOT_INO, Vec::new()));
        layout.nodes.insert(
            ino,
            VNode {
                parent,
                name,
                kind: VKind::Dir(kids),
                mtime,
            },
        );
    }
    for (key, info) in snap_keys {
        let ino = inos.get(key.clone());
        let (parent, name) = parents[&key].clone();
        layout.nodes.insert(
            ino,
            VNode {
                parent,
                name,
                mtime: info.time,
                kind: VKind::Snapshot(info),
            },
        );
    }
    layout.shown = snaps.iter().map(|s| s.id.to_hex()).collect();
    layout.shown.sort();
    layout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_portable() {
        assert_eq!(portable_name("a:b/c\\d?"), "a_b_c_d_");
        assert_eq!(portable_name("job. "), "job");
        assert_eq!(portable_name(""), "_");
        assert_eq!(portable_name("Ünïcode ok"), "Ünïcode ok");
    }

    #[test]
    fn taken_names_get_a_number() {
        let c = vec![
            ("x".to_string(), String::new()),
            ("x (2)".into(), String::new()),
        ];
        assert_eq!(unique(&c, "x".into()), "x (3)");
        assert_eq!(unique(&c, "y".into()), "y");
    }
}
