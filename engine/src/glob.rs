//! Glob patterns for excludes and restore filters, matched against paths as bytes.
//! `*` matches within one path component, `**` across components, `?` one byte,
//! `[abc]`/`[a-z]`/`[!x]` a class, `\` escapes (on Windows `\` is a folder separator as
//! `/` is, and `C:\...` the snapshot's `/C/...`). A pattern without `/` matches any single
//! component (`*.tmp`, `node_modules`); one starting with `/` matches from the root;
//! any other pattern with `/` matches at any depth (`Cache/*.db`).

use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    tokens: Vec<Token>,
    component_only: bool,
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Byte(u8),
    Any,      // ?
    Star,     // *
    DeepStar, // **
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

fn parse(p: &[u8]) -> Result<Vec<Token>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' if p.get(i + 1) == Some(&b'*') => {
                i += 2;
                out.push(Token::DeepStar);
                // `**/` also matches zero directories: the matcher may skip both.
                if p.get(i) == Some(&b'/') {
                    out.push(Token::Byte(b'/'));
                    i += 1;
                }
            }
            b'*' => {
                out.push(Token::Star);
                i += 1;
            }
            b'?' => {
                out.push(Token::Any);
                i += 1;
            }
            b'\\' => {
                let c = *p
                    .get(i + 1)
                    .ok_or_else(|| Error::Invalid("pattern ends with a lone `\\`".into()))?;
                out.push(Token::Byte(c));
                i += 2;
            }
            b'[' => {
                let mut j = i + 1;
                let negated = matches!(p.get(j), Some(b'!') | Some(b'^'));
                if negated {
                    j += 1;
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let c = *p
                        .get(j)
                        .ok_or_else(|| Error::Invalid("unclosed `[` in pattern".into()))?;
                    if c == b']' && !first {
                        break;
                    }
                    first = false;
                    if p.get(j + 1) == Some(&b'-') && p.get(j + 2).is_some_and(|&e| e != b']') {
                        ranges.push((c, p[j + 2]));
                        j += 3;
                    } else {
                        ranges.push((c, c));
                        j += 1;
                    }
                }
                out.push(Token::Class { negated, ranges });
                i = j + 1;
            }
            c => {
                out.push(Token::Byte(c));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Runs the pattern as a set of positions in it, one byte of `s` at a time: time is
/// bounded by pattern length x path length, whatever the stars (trying each split of
/// the path recursively took exponential time on patterns such as `*a*a*a*a*b`).
fn match_tokens(t: &[Token], s: &[u8]) -> bool {
    // Per position: 0 not reached, STAYED by a star that read a byte, ENTERED from the
    // position before. Only an entered `**/` may match no folder at all.
    const STAYED: u8 = 1;
    const ENTERED: u8 = 2;
    fn enter(t: &[Token], set: &mut [u8], mut i: usize) {
        while i <= t.len() && set[i] != ENTERED {
            set[i] = ENTERED;
            match t.get(i) {
                // A star may match nothing.
                Some(Token::Star) => i += 1,
                Some(Token::DeepStar) => {
                    if t.get(i + 1) == Some(&Token::Byte(b'/')) {
                        enter(t, set, i + 2);
                    }
                    i += 1;
                }
                _ => break,
            }
        }
    }
    let n = t.len();
    let mut now = vec![0u8; n + 1];
    let mut next = vec![0u8; n + 1];
    enter(t, &mut now, 0);
    for &c in s {
        next.iter_mut().for_each(|b| *b = 0);
        let mut any = false;
        for i in 0..n {
            if now[i] == 0 {
                continue;
            }
            let step = match &t[i] {
                Token::Byte(b) => *b == c,
                Token::Any => c != b'/',
                Token::Class { negated, ranges } => {
                    c != b'/' && ranges.iter().any(|&(a, b)| a <= c && c <= b) != *negated
                }
                Token::Star | Token::DeepStar => {
                    if matches!(t[i], Token::DeepStar) || c != b'/' {
                        // Read the byte and stay, then possibly move on.
                        next[i] = next[i].max(STAYED);
                        enter(t, &mut next, i + 1);
                        any = true;
                    }
                    continue;
                }
            };
            if step {
                enter(t, &mut next, i + 1);
                any = true;
            }
        }
        if !any {
            return false;
        }
        std::mem::swap(&mut now, &mut next);
    }
    now[n] != 0
}

impl Pattern {
    pub fn new(pattern: &str) -> Result<Pattern> {
        // On Windows `C:\Users\*\AppData` means `/C/Users/*/AppData`, and `\` escapes
        // nothing (as in restic there).
        let native = crate::sys::snapshot_path(pattern);
        let trimmed = native.trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(Error::Invalid(format!("empty pattern {pattern:?}")));
        }
        let component_only = !trimmed.contains('/');
        let full = if component_only || trimmed.starts_with('/') {
            trimmed.to_string()
        } else {
            format!("/**/{trimmed}")
        };
        Ok(Pattern {
            source: pattern.to_string(),
            tokens: parse(full.as_bytes())?,
            component_only,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Does the pattern match this absolute path (as bytes, `/`-separated)?
    pub fn matches(&self, path: &[u8]) -> bool {
        if self.component_only {
            path.split(|&b| b == b'/')
                .filter(|c| !c.is_empty())
                .any(|c| match_tokens(&self.tokens, c))
        } else {
            match_tokens(&self.tokens, path)
        }
    }
}

/// Does any of `patterns` match `path`?
pub fn any_matches(patterns: &[Pattern], path: &[u8]) -> bool {
    patterns.iter().any(|p| p.matches(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Pattern::new(p).unwrap().matches(s.as_bytes())
    }

    #[test]
    fn component_patterns() {
        assert!(m("*.tmp", "/home/a/x.tmp"));
        assert!(m("node_modules", "/w/node_modules"));
        assert!(m("node_modules", "/w/node_modules/a/b"));
        assert!(!m("*.tmp", "/home/a/x.tmpl"));
        assert!(m("?.c", "/src/a.c"));
        assert!(m("[ab]*.c", "/src/b1.c"));
        assert!(!m("[!ab]*.c", "/src/b1.c"));
    }

    #[test]
    fn path_patterns() {
        assert!(m("/home/*/Cache", "/home/alice/Cache"));
        assert!(!m("/home/*/Cache", "/home/alice/x/Cache"));
        assert!(m("/home/**/Cache", "/home/alice/x/Cache"));
        assert!(m("/home/**/Cache", "/home/Cache"));
        assert!(m("Library/Caches", "/Users/a/Library/Caches"));
        assert!(!m("Library/Caches", "/Users/a/MyLibrary/Caches"));
        assert!(m("/data/**", "/data/x/y"));
        if crate::sys::WINDOWS_PATHS {
            // `\` separates folders; a drive is the snapshot's top folder.
            assert!(m(r"C:\Users\*\AppData", "/C/Users/alice/AppData"));
            assert!(m(r"Library\Caches", "/C/Users/a/Library/Caches"));
        } else {
            assert!(m("a\\*b", "/a*b"));
        }
        assert!(Pattern::new("[abc").is_err());
    }

    #[test]
    fn many_stars_take_linear_time() {
        // Tried split by split, this took longer than the age of the universe.
        let p = Pattern::new(&format!("/{}b", "*a".repeat(40))).unwrap();
        let path = format!("/{}", "a".repeat(4000));
        let t = std::time::Instant::now();
        assert!(!p.matches(path.as_bytes()));
        assert!(p.matches(format!("{path}b").as_bytes()));
        let q = Pattern::new(&format!("/{}x", "**/".repeat(40))).unwrap();
        assert!(q.matches(format!("{}/x", "/d".repeat(100)).as_bytes()));
        assert!(!q.matches(format!("{}/y", "/d".repeat(2000)).as_bytes()));
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
    }
}
