//! Following programs that read a snapshot's files one after another in the order a
//! walk of the tree meets them (`cp -r`, `tar`, `rsync`, `find | xargs cat`, a file
//! manager copying a folder): folders in name order, each folder's entries in name
//! order, a sub-folder's files before the next entry of its parent.
//!
//! A walk remembers where it has got to and the files it has handed to read-ahead that
//! the reader has not passed yet. A read of one of those files moves the reader along;
//! when less than half of the window is left, the window doubles (up to a limit) and the
//! walk goes on. This module only keeps that account; going through the trees is the
//! caller's business.

use std::collections::{HashMap, VecDeque};

use crate::Ino;

/// Walks followed at once (several programs copying at the same time).
const MAX_WALKS: usize = 4;
/// Files ahead of a walk's reader when it starts, and at most (the byte budget is
/// usually reached first).
const FIRST_WINDOW: usize = 8;
const MAX_WINDOW: usize = 4096;

pub struct Walk {
    /// The folder the walk is in and the place of the next entry to look at.
    at: (Ino, usize),
    /// Files handed to read-ahead and not yet passed by the reader, in walk order, with
    /// the bytes each was counted for; `seq` of the first is `passed`.
    ahead: VecDeque<(Ino, u64)>,
    /// Where each file of `ahead` is in the walk.
    seq: HashMap<Ino, u64>,
    passed: u64,
    bytes: u64,
    window: usize,
    used: u64,
}

impl Walk {
    fn new(at: (Ino, usize)) -> Walk {
        Walk {
            at,
            ahead: VecDeque::new(),
            seq: HashMap::new(),
            passed: 0,
            bytes: 0,
            window: FIRST_WINDOW,
            used: 0,
        }
    }

    /// Forgets the files before the one at `seq`, and that one when `including`.
    fn pass(&mut self, seq: u64, including: bool) {
        while self.passed < seq + including as u64 {
            let Some((ino, bytes)) = self.ahead.pop_front() else {
                break;
            };
            self.seq.remove(&ino);
            self.bytes -= bytes;
            self.passed += 1;
        }
    }

    fn grow(&mut self) {
        self.window = (self.window * 2).min(MAX_WINDOW);
    }
}

/// What a read of a file tells about the walks.
#[derive(Debug, PartialEq, Eq)]
pub enum Reached {
    /// No walk handed the file out.
    Unknown,
    /// A walk did, and has enough handed out ahead of its reader still.
    Ahead,
    /// Walk `.0` did, and should go on.
    GoOn(usize),
}

pub struct Walks {
    list: Vec<Walk>,
    tick: u64,
    /// Bytes a walk may have handed out ahead of its reader.
    budget: u64,
}

impl Walks {
    pub fn new(budget: u64) -> Walks {
        Walks {
            list: Vec::new(),
            tick: 0,
            budget,
        }
    }

    fn touch(&mut self, w: usize) -> usize {
        self.tick += 1;
        self.list[w].used = self.tick;
        w
    }

    /// The reader of some walk got to file `ino`: forgets what it passed, and says
    /// whether the walk should go on (less than half of its window left; the window then
    /// grows).
    pub fn reached(&mut self, ino: Ino) -> Reached {
        let Some((w, seq)) = self
            .list
            .iter()
            .enumerate()
            .find_map(|(w, walk)| walk.seq.get(&ino).map(|&s| (w, s)))
        else {
            return Reached::Unknown;
        };
        let walk = &mut self.list[w];
        walk.pass(seq, true);
        if walk.ahead.len() > walk.window / 2 {
            self.touch(w);
            return Reached::Ahead;
        }
        walk.grow();
        Reached::GoOn(self.touch(w))
    }

    /// Whether some walk handed out `ino` and its reader has not passed it yet.
    pub fn known(&self, ino: Ino) -> bool {
        self.list.iter().any(|w| w.seq.contains_key(&ino))
    }

    /// Where each walk has got to, to tell whether a file read is the next one a walk
    /// would hand out (its reader read everything handed out without asking).
    pub fn positions(&self) -> Vec<(usize, (Ino, usize))> {
        self.list.iter().map(|w| w.at).enumerate().collect()
    }

    /// Walk `w`'s reader read everything handed out and started the next file; the walk
    /// goes on from `at`, just after that file, with a larger window.
    pub fn resume(&mut self, w: usize, at: (Ino, usize)) -> usize {
        let walk = &mut self.list[w];
        walk.pass(u64::MAX - 1, true);
        walk.at = at;
        walk.grow();
        self.touch(w)
    }

    /// A new walk after the file at place `i` of folder `dir`, replacing the walk used
    /// least recently when there are too many.
    pub fn start(&mut self, dir: Ino, i: usize) -> usize {
        let walk = Walk::new((dir, i + 1));
        if self.list.len() < MAX_WALKS {
            self.list.push(walk);
            let w = self.list.len() - 1;
            return self.touch(w);
        }
        let (w, _) = self
            .list
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.used)
            .expect("MAX_WALKS > 0");
        self.list[w] = walk;
        self.touch(w)
    }

    pub fn at(&mut self, w: usize) -> &mut (Ino, usize) {
        &mut self.list[w].at
    }

    /// Whether walk `w` may hand out another file.
    pub fn wants_more(&self, w: usize) -> bool {
        let walk = &self.list[w];
        walk.ahead.len() < walk.window && walk.bytes < self.budget
    }

    /// Bytes walk `w` may still hand out.
    pub fn room(&self, w: usize) -> u64 {
        self.budget.saturating_sub(self.list[w].bytes)
    }

    /// Walk `w` handed file `ino` to read-ahead, counting `bytes` for it.
    pub fn handed(&mut self, w: usize, ino: Ino, bytes: u64) {
        let walk = &mut self.list[w];
        if walk.seq.contains_key(&ino) {
            // A hard link met again: the reader reads it once.
            return;
        }
        let seq = walk.passed + walk.ahead.len() as u64;
        walk.ahead.push_back((ino, bytes));
        walk.seq.insert(ino, seq);
        walk.bytes += bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_moves_its_walk_on_and_the_window_grows() {
        let mut walks = Walks::new(1 << 30);
        let w = walks.start(100, 0);
        assert_eq!(*walks.at(w), (100, 1));
        let mut next = 1000;
        while walks.wants_more(w) {
            walks.handed(w, next, 10);
            next += 1;
        }
        assert_eq!(next, 1000 + FIRST_WINDOW as u64);
        // Reading the first files does not move the walk on yet.
        assert_eq!(walks.reached(1000), Reached::Ahead);
        assert_eq!(walks.reached(1002), Reached::Ahead);
        assert!(!walks.known(1001), "passed files are forgotten");
        // With half the window left, the walk goes on with a larger window.
        assert_eq!(walks.reached(1004), Reached::GoOn(w));
        while walks.wants_more(w) {
            walks.handed(w, next, 10);
            next += 1;
        }
        assert_eq!(next - 1005, 2 * FIRST_WINDOW as u64);
        assert!(walks.known(next - 1));
        assert_eq!(walks.reached(77), Reached::Unknown);
    }

    #[test]
    fn bytes_ahead_are_bounded() {
        let mut walks = Walks::new(100);
        let w = walks.start(1, 0);
        walks.handed(w, 10, 60);
        assert!(walks.wants_more(w));
        assert_eq!(walks.room(w), 40);
        walks.handed(w, 11, 60);
        assert!(!walks.wants_more(w));
        assert_eq!(walks.room(w), 0);
    }

    #[test]
    fn a_walk_resumes_where_it_stopped_and_old_walks_make_room() {
        let mut walks = Walks::new(1 << 30);
        let w = walks.start(5, 2);
        walks.handed(w, 50, 1);
        walks.handed(w, 51, 1);
        assert_eq!(walks.positions(), vec![(w, (5, 3))]);
        assert_eq!(walks.resume(w, (5, 9)), w);
        assert!(!walks.known(51), "what was handed out was read");
        assert_eq!(*walks.at(w), (5, 9));
        walks.handed(w, 60, 1);
        // Up to MAX_WALKS walks; then the one used least recently goes.
        let others: Vec<usize> = (0..MAX_WALKS)
            .map(|k| walks.start(10 + k as Ino, 0))
            .collect();
        assert!(!walks.known(60), "the oldest walk was replaced");
        assert_eq!(others.len(), MAX_WALKS);
    }
}
