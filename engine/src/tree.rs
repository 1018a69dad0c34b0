//! Directory trees: one blob per directory, entries sorted by name, each with its type,
//! metadata, and either its chunk ids (files) or its sub-tree id (directories).
//! Serialised as JSON; names that are not UTF-8 are kept byte for byte as hex.

use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::id::{from_hex, to_hex, Id};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Chardev,
    Blockdev,
}

/// A name or symlink target: raw bytes, since Unix names need not be UTF-8.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Name(pub Vec<u8>);

impl Name {
    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
    /// A name that can be joined under a directory without leaving it.
    pub fn is_safe_component(&self) -> bool {
        !self.0.is_empty()
            && self.0 != b"."
            && self.0 != b".."
            && !self.0.contains(&b'/')
            && !self.0.contains(&0)
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum NameRepr {
    Text(String),
    Bytes { hex: String },
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => NameRepr::Text(t.to_string()),
            Err(_) => NameRepr::Bytes {
                hex: to_hex(&self.0),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(match NameRepr::deserialize(d)? {
            NameRepr::Text(t) => Name(t.into_bytes()),
            NameRepr::Bytes { hex } => {
                Name(from_hex(&hex).ok_or_else(|| serde::de::Error::custom("bad hex in name"))?)
            }
        })
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: Name,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits including setuid/setgid/sticky (st_mode & 0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub mtime: i64,
    pub atime: i64,
    pub ctime: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inode: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub device: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub links: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Name>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
}

fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

impl Node {
    /// A node from `lstat` data; content, sub-tree and symlink target are filled in later.
    pub fn from_metadata(name: &OsStr, md: &Metadata) -> Node {
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_symlink() {
            NodeKind::Symlink
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else if ft.is_socket() {
            NodeKind::Socket
        } else if ft.is_char_device() {
            NodeKind::Chardev
        } else if ft.is_block_device() {
            NodeKind::Blockdev
        } else {
            NodeKind::File
        };
        Node {
            name: Name(name.as_bytes().to_vec()),
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: if kind == NodeKind::File { md.size() } else { 0 },
            mtime: nanos(md.mtime(), md.mtime_nsec()),
            // Listing a folder moves its atime; keeping it would make every unchanged
            // folder a new tree. Folders record their mtime as atime instead.
            atime: if kind == NodeKind::Dir {
                nanos(md.mtime(), md.mtime_nsec())
            } else {
                nanos(md.atime(), md.atime_nsec())
            },
            ctime: nanos(md.ctime(), md.ctime_nsec()),
            inode: md.ino(),
            device: md.dev(),
            links: if kind == NodeKind::Dir { 0 } else { md.nlink() },
            rdev: if matches!(kind, NodeKind::Chardev | NodeKind::Blockdev) {
                md.rdev()
            } else {
                0
            },
            target: None,
            content: Vec::new(),
            subtree: None,
        }
    }

    /// True when a file looks untouched since `old` was recorded, so its chunks can be reused.
    pub fn unchanged_since(&self, old: &Node) -> bool {
        old.kind == NodeKind::File
            && self.kind == NodeKind::File
            && self.size == old.size
            && self.mtime == old.mtime
            && self.ctime == old.ctime
            && self.inode == old.inode
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serialising a tree")
    }

    pub fn from_bytes(id: &Id, bytes: &[u8]) -> Result<Tree> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(format!("tree {id}"), format!("malformed tree: {e}")))
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.0.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_names_round_trip() {
        let md = std::fs::symlink_metadata(".").unwrap();
        let mut n = Node::from_metadata(OsStr::from_bytes(b"caf\xe9"), &md);
        n.target = Some(Name("é".as_bytes().to_vec()));
        let t = Tree { nodes: vec![n] };
        let back = Tree::from_bytes(&Id::default(), &t.to_bytes()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.nodes[0].name.0, b"caf\xe9");
    }

    #[test]
    fn unsafe_names() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
            assert!(!Name(bad.to_vec()).is_safe_component(), "{bad:?}");
        }
        assert!(Name(b"..a".to_vec()).is_safe_component());
    }
}
