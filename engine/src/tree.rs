//! Directory trees: one blob per directory, entries sorted by name, each with its type,
//! metadata, and either its chunk ids (files) or its sub-tree id (directories).
//! Serialised as JSON; names that are not UTF-8 are kept byte for byte as hex. What a
//! node holds is read off the OS by `crate::sys` (docs/FORMAT.md, "Trees").

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

/// A name or symlink target: raw bytes, since Unix names need not be UTF-8 (and a
/// Windows name with an unpaired surrogate is stored as WTF-8: `crate::names`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Name(pub Vec<u8>);

impl Name {
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

/// A name is a JSON string when it is UTF-8, else `{"hex": "..."}`.
impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => s.serialize_str(t),
            Err(_) => {
                use serde::ser::SerializeStruct;
                let mut st = s.serialize_struct("Name", 1)?;
                st.serialize_field("hex", &to_hex(&self.0))?;
                st.end()
            }
        }
    }
}

/// Read with a visitor rather than an untagged enum, which would buffer every name of
/// every tree before trying its variants (the no-change backup decodes every tree).
impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> serde::de::Visitor<'de> for NameVisitor {
            type Value = Name;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"a name: a string, or {"hex": "..."}"#)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Name, E> {
                Ok(Name(s.as_bytes().to_vec()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Name, A::Error> {
                let mut hex: Option<std::borrow::Cow<'de, str>> = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "hex" {
                        hex = Some(map.next_value()?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                let hex = hex.ok_or_else(|| serde::de::Error::missing_field("hex"))?;
                from_hex(&hex)
                    .map(Name)
                    .ok_or_else(|| serde::de::Error::custom("bad hex in name"))
            }
        }
        d.deserialize_any(NameVisitor)
    }
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: Name,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits including setuid/setgid/sticky (st_mode & 0o7777); made up from
    /// the attributes for a node from Windows.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub mtime: i64,
    pub atime: i64,
    /// Unix only (0 on Windows, which has no change time to be had cheaply).
    pub ctime: i64,
    /// Creation time, nanoseconds since the Unix epoch (Windows; 0 when not recorded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created: i64,
    /// Windows file attributes (`FILE_ATTRIBUTE_*`: read-only, hidden, system, archive,
    /// directory, reparse point, ...), 0 for a node made elsewhere.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attributes: u32,
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

impl Node {
    /// A folder that exists only in a snapshot's layout (`UNC` and the server above a
    /// Windows share): no metadata of its own.
    pub fn layout_dir(name: Name) -> Node {
        Node {
            name,
            kind: NodeKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            atime: 0,
            ctime: 0,
            created: 0,
            attributes: 0,
            inode: 0,
            device: 0,
            links: 0,
            rdev: 0,
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

    /// What is wrong with this tree on its own, one message per entry at fault: names
    /// out of order or twice (lookups and restore rely on sorted, unique names), names
    /// that cannot be a file name (`..`, `a/b`, NUL), folders without a sub-tree, data
    /// on an entry that is not a file. Backup never writes such a tree; `check` reports
    /// them, and restore and the mount refuse the entries.
    pub fn problems(&self) -> Vec<String> {
        let mut c = EntryChecker::default();
        self.nodes.iter().flat_map(|n| c.check(n)).collect()
    }

    /// Decodes a tree's JSON from `r` entry by entry, handing each to `f`: memory holds
    /// one entry, however many the folder has. An error from `f` stops the decoding and
    /// is returned.
    pub fn for_each_node(
        id: &Id,
        r: impl std::io::Read,
        f: &mut dyn FnMut(Node) -> Result<()>,
    ) -> Result<()> {
        use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
        struct Sink<'f> {
            f: &'f mut dyn FnMut(Node) -> Result<()>,
            failed: Option<Error>,
        }
        struct Nodes<'s, 'f>(&'s mut Sink<'f>);
        impl<'de> DeserializeSeed<'de> for Nodes<'_, '_> {
            type Value = ();
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
                d.deserialize_seq(self)
            }
        }
        impl<'de> Visitor<'de> for Nodes<'_, '_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of entries")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
                while let Some(node) = seq.next_element::<Node>()? {
                    if let Err(e) = (self.0.f)(node) {
                        self.0.failed = Some(e);
                        return Err(A::Error::custom("stopped"));
                    }
                }
                Ok(())
            }
        }
        impl<'de> Visitor<'de> for &mut Sink<'_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a tree")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "nodes" {
                        map.next_value_seed(Nodes(&mut *self))?;
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(())
            }
        }
        let mut sink = Sink { f, failed: None };
        let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(r));
        let result = de.deserialize_map(&mut sink).and_then(|_| de.end());
        match (sink.failed, result) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(Error::corrupt(
                format!("tree {id}"),
                format!("malformed tree: {e}"),
            )),
            (None, Ok(())) => Ok(()),
        }
    }
}

/// [`Tree::problems`] one entry at a time, for trees read entry by entry.
#[derive(Default)]
pub struct EntryChecker {
    previous: Option<Name>,
}

impl EntryChecker {
    /// What is wrong with `n`, given the entries before it.
    pub fn check(&mut self, n: &Node) -> Vec<String> {
        let mut out = Vec::new();
        let name = &n.name;
        if !name.is_safe_component() {
            out.push(format!("entry {name:?} is not a valid name"));
        }
        if let Some(prev) = self.previous.as_ref().filter(|p| *p >= name) {
            out.push(if prev == name {
                format!("entry {name:?} appears twice")
            } else {
                format!("entry {name:?} is out of order")
            });
        }
        match n.kind {
            NodeKind::Dir if n.subtree.is_none() => {
                out.push(format!("folder {name:?} has no sub-tree"))
            }
            NodeKind::Dir if !n.content.is_empty() => {
                out.push(format!("folder {name:?} has file contents"))
            }
            NodeKind::File if n.subtree.is_some() => {
                out.push(format!("file {name:?} has a sub-tree"))
            }
            NodeKind::File | NodeKind::Dir => {}
            _ if n.subtree.is_some() || !n.content.is_empty() => {
                out.push(format!("{name:?} ({:?}) has contents", n.kind))
            }
            _ => {}
        }
        self.previous = Some(n.name.clone());
        out
    }
}

impl Tree {
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
        let mut n = crate::sys::node_from_metadata(Name(b"caf\xe9".to_vec()), &md);
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
