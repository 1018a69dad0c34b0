//! Names across operating systems (docs/FORMAT.md, "Names"). A stored name is bytes: a
//! Unix name as it is, a Windows name (UTF-16) as UTF-8, or as WTF-8 when it holds an
//! unpaired surrogate, so every name comes back exactly on the OS that made it.
//!
//! Restoring onto another OS, some names cannot be created as they are. This module
//! chooses the name each entry of a folder is restored under:
//! - on Windows, a name Windows refuses (`a:b`, `CON`, `aux.txt`, a trailing dot or
//!   space, `* ? < > | " \`, control characters, bytes that are not text) is escaped:
//!   each refused character becomes its full-width look-alike (`a：b`), a device name
//!   gets `_` after it (`aux_.txt`), bytes that are not text become `%E9`;
//! - in a folder that ignores case (Windows, macOS, ext4 with casefold), an entry whose
//!   name differs only in case from an earlier one gets ` (2)` before its extension, as
//!   Explorer names a copy; so does an escaped name that another entry already has.
//!
//! Pure functions: the Windows rules are tested on every OS.

use std::collections::HashSet;

/// Why an entry is restored under another name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Renamed {
    /// The name cannot be created on this OS (Windows' rules).
    NotValidHere,
    /// Another entry of the folder has the same name when case is ignored (or the
    /// escaped name was taken).
    NameTaken,
}

impl Renamed {
    pub fn describe(self) -> &'static str {
        match self {
            Renamed::NotValidHere => "a name this system cannot hold",
            Renamed::NameTaken => "another entry of the folder has that name when case is ignored",
        }
    }
}

/// The stored form of a Windows name: UTF-8, with unpaired surrogates as WTF-8 does
/// (each as the three bytes UTF-8 would give its code point).
pub fn from_utf16(units: &[u16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(units.len());
    for c in char::decode_utf16(units.iter().copied()) {
        match c {
            Ok(c) => push_cp(&mut out, c as u32),
            Err(e) => push_cp(&mut out, e.unpaired_surrogate() as u32),
        }
    }
    out
}

/// The UTF-16 of a stored name, or `None` when it is not UTF-8/WTF-8 (a Unix name in
/// another encoding). A surrogate pair written as two separate halves is not WTF-8
/// either, so each UTF-16 name has exactly one stored form.
pub fn to_utf16(bytes: &[u8]) -> Option<Vec<u16>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let (cp, len) = next_cp(bytes, i)?;
        i += len;
        if cp >= 0x10000 {
            let c = cp - 0x10000;
            out.push(0xD800 | (c >> 10) as u16);
            out.push(0xDC00 | (c & 0x3FF) as u16);
        } else {
            let u = cp as u16;
            let after_lead = out.last().is_some_and(|&p| (0xD800..0xDC00).contains(&p));
            if (0xDC00..0xE000).contains(&u) && after_lead {
                return None;
            }
            out.push(u);
        }
    }
    Some(out)
}

/// The code point at `i` of generalised UTF-8 (surrogates allowed), and its length.
fn next_cp(b: &[u8], i: usize) -> Option<(u32, usize)> {
    let lead = b[i];
    let (len, min, init) = match lead {
        0x00..=0x7F => return Some((lead as u32, 1)),
        0xC2..=0xDF => (2, 0x80, (lead & 0x1F) as u32),
        0xE0..=0xEF => (3, 0x800, (lead & 0x0F) as u32),
        0xF0..=0xF4 => (4, 0x10000, (lead & 0x07) as u32),
        _ => return None,
    };
    let rest = b.get(i + 1..i + len)?;
    let mut cp = init;
    for &c in rest {
        if c & 0xC0 != 0x80 {
            return None;
        }
        cp = (cp << 6) | (c & 0x3F) as u32;
    }
    (cp >= min && cp <= 0x10FFFF).then_some((cp, len))
}

fn push_cp(out: &mut Vec<u8>, cp: u32) {
    match cp {
        0..=0x7F => out.push(cp as u8),
        0x80..=0x7FF => out.extend([0xC0 | (cp >> 6) as u8, 0x80 | (cp & 0x3F) as u8]),
        0x800..=0xFFFF => out.extend([
            0xE0 | (cp >> 12) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]),
        _ => out.extend([
            0xF0 | (cp >> 18) as u8,
            0x80 | ((cp >> 12) & 0x3F) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]),
    }
}

/// Characters Windows refuses in names, and the look-alikes they become (the same as
/// rclone's encoding, so names read the same across tools).
const WINDOWS_REFUSED: [(char, char); 9] = [
    ('<', '＜'),
    ('>', '＞'),
    (':', '：'),
    ('"', '＂'),
    ('|', '｜'),
    ('?', '？'),
    ('*', '＊'),
    ('\\', '＼'),
    ('/', '／'),
];

/// Device names Windows reserves, with or without an extension.
const WINDOWS_DEVICES: [&str; 6] = ["CON", "PRN", "AUX", "NUL", "COM", "LPT"];

fn is_device_name(base: &[u32]) -> bool {
    let up: Vec<u32> = base
        .iter()
        .map(|&c| {
            if (b'a' as u32..=b'z' as u32).contains(&c) {
                c - 32
            } else {
                c
            }
        })
        .collect();
    let text: String = up.iter().filter_map(|&c| char::from_u32(c)).collect();
    if text.chars().count() != up.len() {
        return false;
    }
    match text.len() {
        3 => WINDOWS_DEVICES[..4].contains(&text.as_str()),
        _ => {
            let mut cs = text.chars();
            let head: String = cs.by_ref().take(3).collect();
            let digit: Vec<char> = cs.collect();
            WINDOWS_DEVICES[4..].contains(&head.as_str())
                && matches!(digit.as_slice(), ['0'..='9' | '¹' | '²' | '³'])
        }
    }
}

/// The name a stored name can be created under on Windows, in stored form, or `None`
/// when Windows accepts it as it is.
pub fn windows_escape(name: &[u8]) -> Option<Vec<u8>> {
    // Code points (surrogates kept as such); a byte that is not text becomes `%XX`.
    let mut cps: Vec<u32> = Vec::with_capacity(name.len());
    let mut changed = false;
    let mut i = 0;
    while i < name.len() {
        match next_cp(name, i) {
            Some((cp, len)) => {
                i += len;
                let refused = WINDOWS_REFUSED.iter().find(|(c, _)| *c as u32 == cp);
                if let Some((_, look_alike)) = refused {
                    cps.push(*look_alike as u32);
                    changed = true;
                } else if (1..0x20).contains(&cp) {
                    // Control characters: their symbols (U+2401...).
                    cps.push(0x2400 + cp);
                    changed = true;
                } else {
                    cps.push(cp);
                }
            }
            None => {
                for c in format!("%{:02X}", name[i]).chars() {
                    cps.push(c as u32);
                }
                i += 1;
                changed = true;
            }
        }
    }
    // A trailing dot or space is dropped by Windows: keep it visible.
    match cps.last() {
        Some(&c) if c == '.' as u32 => {
            *cps.last_mut().unwrap() = '．' as u32;
            changed = true;
        }
        Some(&c) if c == ' ' as u32 => {
            *cps.last_mut().unwrap() = '␠' as u32;
            changed = true;
        }
        _ => {}
    }
    let dot = cps
        .iter()
        .position(|&c| c == '.' as u32)
        .unwrap_or(cps.len());
    let mut base_end = dot;
    while base_end > 0 && cps[base_end - 1] == ' ' as u32 {
        base_end -= 1;
    }
    if is_device_name(&cps[..base_end]) {
        cps.insert(base_end, '_' as u32);
        changed = true;
    }
    if !changed {
        return None;
    }
    let mut out = Vec::with_capacity(cps.len() + 4);
    for cp in cps {
        push_cp(&mut out, cp);
    }
    Some(out)
}

/// A name's key in a folder that ignores case: each character's simple upper case, as
/// NTFS compares names (one character for one, so `ß` stays `ß`).
pub fn fold(name: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(name) {
        Ok(s) if s.is_ascii() => s.to_ascii_uppercase().into_bytes(),
        Ok(s) => {
            let mut out = String::with_capacity(s.len());
            for c in s.chars() {
                let mut up = c.to_uppercase();
                match (up.next(), up.next()) {
                    (Some(u), None) => out.push(u),
                    _ => out.push(c),
                }
            }
            out.into_bytes()
        }
        Err(_) => name.to_ascii_uppercase(),
    }
}

/// `name (n)`, before the extension as Explorer names copies (`report (2).pdf`).
fn numbered(name: &[u8], n: usize) -> Vec<u8> {
    let dot = name
        .iter()
        .rposition(|&b| b == b'.')
        .filter(|&d| d > 0)
        .unwrap_or(name.len());
    let mut out = name[..dot].to_vec();
    out.extend_from_slice(format!(" ({n})").as_bytes());
    out.extend_from_slice(&name[dot..]);
    out
}

/// The names a folder's entries are created under, for stored names in the folder's
/// order. `escape` is the target OS's rule ([`windows_escape`] on Windows; nothing
/// elsewhere). `ignores_case` is asked, at most once, only when two of the names would
/// be the same but for case: whether the folder being restored into ignores case.
/// `None` keeps an entry's name; an entry that keeps its name is never displaced by one
/// that was escaped or renamed.
pub fn place(
    names: &[&[u8]],
    escape: fn(&[u8]) -> Option<Vec<u8>>,
    ignores_case: impl FnOnce() -> bool,
) -> Vec<Option<(Vec<u8>, Renamed)>> {
    let escaped: Vec<Option<Vec<u8>>> = names.iter().map(|n| escape(n)).collect();
    let wanted = |i: usize| escaped[i].as_deref().unwrap_or(names[i]);
    let mut folds = HashSet::with_capacity(names.len());
    let mut twins = false;
    for i in 0..names.len() {
        if !folds.insert(fold(wanted(i))) {
            twins = true;
            break;
        }
    }
    let mut out: Vec<Option<(Vec<u8>, Renamed)>> = vec![None; names.len()];
    if !twins && escaped.iter().all(Option::is_none) {
        return out;
    }
    let fold_case = twins && ignores_case();
    let key = |n: &[u8]| if fold_case { fold(n) } else { n.to_vec() };
    let mut taken: HashSet<Vec<u8>> = HashSet::with_capacity(names.len());
    let mut later = Vec::new();
    for i in 0..names.len() {
        if escaped[i].is_none() && taken.insert(key(names[i])) {
            continue;
        }
        later.push(i);
    }
    for i in later {
        let (base, why) = match &escaped[i] {
            Some(e) => (e.clone(), Renamed::NotValidHere),
            None => (names[i].to_vec(), Renamed::NameTaken),
        };
        let mut candidate = base.clone();
        let mut n = 2;
        while !taken.insert(key(&candidate)) {
            candidate = numbered(&base, n);
            n += 1;
        }
        out[i] = Some((candidate, why));
    }
    out
}

/// [`place`] for a folder too large to hold whole (millions of entries): the names are
/// read in passes over the folder, and only a 64-bit hash per name is kept, so memory
/// is 8 bytes an entry while planning and none when no name needs to change (the usual
/// case), 20 or so when some do. Two names whose hashes meet are taken as the same
/// name: at worst one more entry is renamed; never are two given one name.
///
/// Use: [`LargePlace::plan`] with every name in order (a first pass over the folder),
/// then, if [`LargePlace::needs_claims`], [`LargePlace::claim`] with every name in order
/// (a second pass), then [`LargePlace::next`] for each name in order as it is restored.
pub struct LargePlace {
    escape: fn(&[u8]) -> Option<Vec<u8>>,
    folds: Vec<u64>,
    any_escaped: bool,
    fold_case: bool,
    /// Keys of the names kept or given so far; `None` when every name is kept.
    taken: Option<HashSet<u64>>,
    /// Which entries keep their name, a bit per entry in order, once claimed.
    kept: Vec<u64>,
    claimed: usize,
    placed: usize,
}

impl LargePlace {
    pub fn new(escape: fn(&[u8]) -> Option<Vec<u8>>) -> LargePlace {
        LargePlace {
            escape,
            folds: Vec::new(),
            any_escaped: false,
            fold_case: false,
            taken: None,
            kept: Vec::new(),
            claimed: 0,
            placed: 0,
        }
    }

    /// First pass: one name.
    pub fn plan(&mut self, name: &[u8]) {
        let escaped = (self.escape)(name);
        self.any_escaped |= escaped.is_some();
        let wanted = escaped.as_deref().unwrap_or(name);
        self.folds.push(hash_of(&fold(wanted)));
    }

    /// After the first pass: whether the second is needed (some name is escaped, or
    /// two differ only in case and `ignores_case`, asked only then, says it matters).
    pub fn needs_claims(&mut self, ignores_case: impl FnOnce() -> bool) -> bool {
        let mut folds = std::mem::take(&mut self.folds);
        folds.sort_unstable();
        let twins = folds.windows(2).any(|w| w[0] == w[1]);
        drop(folds);
        self.fold_case = twins && ignores_case();
        let needed = self.any_escaped || self.fold_case;
        if needed {
            self.taken = Some(HashSet::new());
        }
        needed
    }

    fn key(fold_case: bool, name: &[u8]) -> u64 {
        if fold_case {
            hash_of(&fold(name))
        } else {
            hash_of(name)
        }
    }

    /// Second pass: one name, in the first pass's order. An entry keeps its name when
    /// it needs no escaping and no earlier entry kept the same name.
    pub fn claim(&mut self, name: &[u8]) {
        let i = self.claimed;
        self.claimed += 1;
        if i.is_multiple_of(64) {
            self.kept.push(0);
        }
        let key = Self::key(self.fold_case, name);
        let keeps =
            (self.escape)(name).is_none() && self.taken.as_mut().is_some_and(|t| t.insert(key));
        if keeps {
            self.kept[i / 64] |= 1 << (i % 64);
        }
    }

    /// The name the next entry (in the same order) is restored under; `None` keeps it.
    pub fn next(&mut self, name: &[u8]) -> Option<(Vec<u8>, Renamed)> {
        let i = self.placed;
        self.placed += 1;
        let taken = self.taken.as_mut()?;
        if self
            .kept
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
        {
            return None;
        }
        let (base, why) = match (self.escape)(name) {
            Some(e) => (e, Renamed::NotValidHere),
            None => (name.to_vec(), Renamed::NameTaken),
        };
        let mut candidate = base.clone();
        let mut n = 2;
        while !taken.insert(Self::key(self.fold_case, &candidate)) {
            candidate = numbered(&base, n);
            n += 1;
        }
        Some((candidate, why))
    }
}

fn hash_of(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// No renaming: the rule where the OS takes any name the snapshot can hold.
pub fn keep(_: &[u8]) -> Option<Vec<u8>> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(name: &str) -> Option<String> {
        windows_escape(name.as_bytes()).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn utf16_round_trips_unpaired_surrogates_too() {
        let cases: [&[u16]; 5] = [
            &[0x61, 0x62],
            &[0xD83C, 0xDF89],         // 🎉, a pair
            &[0x61, 0xD800, 0x62],     // a lone lead surrogate
            &[0xDC00],                 // a lone trail surrogate
            &[0xDBFF, 0xDBFF, 0xDFFF], // a lone lead, then a pair
        ];
        for units in cases {
            let stored = from_utf16(units);
            assert_eq!(to_utf16(&stored).as_deref(), Some(units), "{units:x?}");
        }
        assert_eq!(from_utf16(&[0x63, 0xE9]), "cé".as_bytes());
        assert!(std::str::from_utf8(&from_utf16(&[0xD800])).is_err());
        // Not text, and a pair split into two halves: no UTF-16 form.
        assert_eq!(to_utf16(b"caf\xe9"), None);
        assert_eq!(to_utf16(b"\xed\xa0\xbc\xed\xbe\x89"), None);
        assert_eq!(to_utf16(b"\xc0\xaf"), None, "overlong");
    }

    #[test]
    fn windows_refused_names_are_escaped() {
        assert_eq!(esc("a:b").as_deref(), Some("a：b"));
        assert_eq!(esc("what? *now*").as_deref(), Some("what？ ＊now＊"));
        assert_eq!(esc(r#"<a|b>"c\d"#).as_deref(), Some("＜a｜b＞＂c＼d"));
        assert_eq!(esc("CON").as_deref(), Some("CON_"));
        assert_eq!(esc("con").as_deref(), Some("con_"));
        assert_eq!(esc("aux.txt").as_deref(), Some("aux_.txt"));
        assert_eq!(esc("nul.tar.gz").as_deref(), Some("nul_.tar.gz"));
        assert_eq!(esc("COM1").as_deref(), Some("COM1_"));
        assert_eq!(esc("lpt9.log").as_deref(), Some("lpt9_.log"));
        assert_eq!(esc("trailing.").as_deref(), Some("trailing．"));
        assert_eq!(esc("trailing ").as_deref(), Some("trailing␠"));
        assert_eq!(esc("tab\there").as_deref(), Some("tab␉here"));
        assert_eq!(
            windows_escape(b"caf\xe9.txt").as_deref(),
            Some(&b"caf%E9.txt"[..])
        );
        for fine in [
            "console",
            "COM10",
            "CONx.txt",
            "a.b",
            ".hidden",
            "Résumé 日本語 🎉.txt",
        ] {
            assert_eq!(esc(fine), None, "{fine}");
        }
        // A lone surrogate is a valid Windows name: kept.
        assert_eq!(windows_escape(&from_utf16(&[0x61, 0xD800])), None);
    }

    #[test]
    fn case_twins_are_numbered_only_where_case_is_ignored() {
        let names: [&[u8]; 3] = [b"A", b"README.txt", b"a"];
        let mut asked = 0;
        let p = place(&names, keep, || {
            asked += 1;
            true
        });
        assert_eq!(asked, 1);
        assert_eq!(p[0], None);
        assert_eq!(p[1], None);
        assert_eq!(p[2], Some((b"a (2)".to_vec(), Renamed::NameTaken)));
        // A folder that tells case apart keeps both.
        assert!(place(&names, keep, || false).iter().all(Option::is_none));
        // No twins: the folder is not even asked.
        let p = place(&[b"x", b"y"], keep, || panic!("asked without twins"));
        assert!(p.iter().all(Option::is_none));
        let p = place(&[b"Readme.TXT", b"readme.txt"], keep, || true);
        assert_eq!(p[1], Some((b"readme (2).txt".to_vec(), Renamed::NameTaken)));
        let p = place(&["É".as_bytes(), "é".as_bytes()], keep, || true);
        assert_eq!(p[1].as_ref().unwrap().0, "é (2)".as_bytes());
    }

    #[test]
    fn an_escaped_name_never_displaces_a_real_one() {
        // `a:b` escapes to `a：b`, which the folder already holds under that very name.
        let names: [&[u8]; 3] = [b"a:b", "a：b".as_bytes(), b"aux.txt"];
        let p = place(&names, windows_escape, || true);
        assert_eq!(
            p[0],
            Some(("a：b (2)".as_bytes().to_vec(), Renamed::NotValidHere))
        );
        assert_eq!(p[1], None);
        assert_eq!(p[2], Some((b"aux_.txt".to_vec(), Renamed::NotValidHere)));
    }

    #[test]
    fn a_large_folder_is_placed_as_a_small_one() {
        let names: Vec<&[u8]> = vec![
            b"A",
            b"B.txt",
            b"CON",
            b"a",
            b"a (2)",
            b"a:b",
            b"aux.txt",
            b"b.TXT",
            b"b.txt",
            b"c\xff",
            b"con",
            b"x.",
            b"\xc3\xa9",
            b"\xc3\x89",
        ];
        let mut names = names;
        names.sort();
        for escape in [windows_escape as fn(&[u8]) -> Option<Vec<u8>>, keep] {
            for ignores in [false, true] {
                let want = place(&names, escape, || ignores);
                let mut large = LargePlace::new(escape);
                names.iter().for_each(|n| large.plan(n));
                if large.needs_claims(|| ignores) {
                    names.iter().for_each(|n| large.claim(n));
                }
                let got: Vec<_> = names.iter().map(|n| large.next(n)).collect();
                assert_eq!(got, want, "ignores case: {ignores}");
            }
        }
    }
}
