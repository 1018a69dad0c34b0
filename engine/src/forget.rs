//! Retention: which snapshots a set of keep rules keeps, and why. Only decides; removing
//! the snapshot objects is [`forget`], and freeing their data is `prune`.
//!
//! Rules work as restic's and borg's: snapshots are grouped (by job, or by host and paths
//! when they belong to no job) and each group is walked newest first. `last N` keeps the
//! N newest; `hourly N` keeps the newest snapshot of each of the N most recent hours that
//! have one, and so on for days, ISO weeks, months and years (calendar periods in the
//! time zone given, normally the local one); `within D` keeps every snapshot taken less
//! than D before the group's newest. A snapshot kept by any rule is kept.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde::Serialize;

use crate::backend::Kind;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::Repository;
use crate::snapshot::SnapshotEntry;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeepRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hourly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yearly: Option<u32>,
    /// A duration such as `30d`, `2w`, `1y6m`, `12h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
}

impl KeepRules {
    /// True when no rule is set: applying it would remove every snapshot, which
    /// [`plan`] refuses.
    pub fn is_empty(&self) -> bool {
        *self == KeepRules::default()
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(w) = &self.within {
            parse_within(w)?;
        }
        Ok(())
    }
}

/// `30d`, `2w`, `1y6m`, `12h`, `90m` (minutes), in any combination.
pub fn parse_within(s: &str) -> Result<Span> {
    let bad = || {
        Error::Invalid(format!(
            "{s:?} is not a duration: use a number and a unit, e.g. 30d, 2w, 6m (months), 1y, 12h"
        ))
    };
    let mut span = Span::new();
    let mut digits = String::new();
    let mut any = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        span = match c {
            'y' => span.try_years(span.get_years() as i64 + n),
            'm' => span.try_months(span.get_months() as i64 + n),
            'w' => span.try_weeks(span.get_weeks() as i64 + n),
            'd' => span.try_days(span.get_days() as i64 + n),
            'h' => span.try_hours(span.get_hours() as i64 + n),
            _ => return Err(bad()),
        }
        .map_err(|_| bad())?;
        any = true;
    }
    if !digits.is_empty() || !any {
        return Err(bad());
    }
    Ok(span)
}

/// What happens to one snapshot, and which rules keep it.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    pub id: Id,
    pub time: String,
    pub group: String,
    pub keep: bool,
    /// `last`, `hourly`, ... for kept snapshots; empty for removed ones.
    pub reasons: Vec<&'static str>,
}

/// The group a snapshot belongs to: its job, else its host and paths.
pub fn group_of(s: &SnapshotEntry) -> String {
    match &s.snapshot.job {
        Some(job) => format!("job {job}"),
        None => format!(
            "host {} paths {}",
            s.snapshot.hostname,
            s.snapshot.paths.join(",")
        ),
    }
}

/// Decides for every snapshot given (any order); result is newest first per group.
pub fn plan(
    snapshots: &[SnapshotEntry],
    rules: &KeepRules,
    tz: &TimeZone,
) -> Result<Vec<Decision>> {
    if rules.is_empty() {
        return Err(Error::Invalid(
            "no keep rules given: every snapshot would be removed (give --keep-last, --keep-daily, ...)"
                .into(),
        ));
    }
    let within = rules.within.as_deref().map(parse_within).transpose()?;
    let mut groups: BTreeMap<String, Vec<&SnapshotEntry>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(group_of(s)).or_default().push(s);
    }
    let mut out = Vec::new();
    for (group, mut snaps) in groups {
        // Newest first; snapshots with an unreadable time sort last and are kept.
        snaps.sort_by_key(|s| std::cmp::Reverse((s.snapshot.timestamp(), s.id)));
        let newest = snaps.first().and_then(|s| s.snapshot.timestamp());
        let cutoff = match (within, newest) {
            (Some(span), Some(n)) => Some(
                n.to_zoned(tz.clone())
                    .checked_sub(span)
                    .map_err(|e| Error::Invalid(format!("keep-within: {e}")))?
                    .timestamp(),
            ),
            _ => None,
        };
        let mut counters = [
            ("hourly", rules.hourly.unwrap_or(0), None::<i64>),
            ("daily", rules.daily.unwrap_or(0), None),
            ("weekly", rules.weekly.unwrap_or(0), None),
            ("monthly", rules.monthly.unwrap_or(0), None),
            ("yearly", rules.yearly.unwrap_or(0), None),
        ];
        let mut last = rules.last.unwrap_or(0);
        for s in snaps {
            let mut reasons = Vec::new();
            let Some(ts) = s.snapshot.timestamp() else {
                out.push(Decision {
                    id: s.id,
                    time: s.snapshot.time.clone(),
                    group: group.clone(),
                    keep: true,
                    reasons: vec!["unreadable time"],
                });
                continue;
            };
            if last > 0 {
                last -= 1;
                reasons.push("last");
            }
            for (i, (name, left, seen)) in counters.iter_mut().enumerate() {
                let bucket = period(ts, tz, i);
                if *left > 0 && *seen != Some(bucket) {
                    *seen = Some(bucket);
                    *left -= 1;
                    reasons.push(*name);
                }
            }
            if cutoff.is_some_and(|c| ts > c) {
                reasons.push("within");
            }
            out.push(Decision {
                id: s.id,
                time: s.snapshot.time.clone(),
                group: group.clone(),
                keep: !reasons.is_empty(),
                reasons,
            });
        }
    }
    Ok(out)
}

/// A number naming the calendar period (0 hour, 1 day, 2 ISO week, 3 month, 4 year) a
/// moment falls in, in the given time zone.
fn period(ts: Timestamp, tz: &TimeZone, which: usize) -> i64 {
    let z = ts.to_zoned(tz.clone());
    let (y, m, d) = (z.year() as i64, z.month() as i64, z.day() as i64);
    match which {
        0 => ((y * 100 + m) * 100 + d) * 100 + z.hour() as i64,
        1 => (y * 100 + m) * 100 + d,
        2 => {
            let w = z.date().iso_week_date();
            w.year() as i64 * 100 + w.week() as i64
        }
        3 => y * 100 + m,
        _ => y,
    }
}

/// Removes the snapshot objects the plan does not keep; returns how many were removed.
/// Their data stays until `prune`.
pub fn forget(repo: &Repository, decisions: &[Decision]) -> Result<usize> {
    let mut n = 0;
    for d in decisions.iter().filter(|d| !d.keep) {
        repo.backend().remove(Kind::Snapshot, &d.id.to_hex())?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Snapshot, Summary};

    fn snap(n: u8, time: &str, job: Option<&str>) -> SnapshotEntry {
        let mut id = [0u8; 32];
        id[0] = n;
        SnapshotEntry {
            id: Id(id),
            snapshot: Snapshot {
                time: time.parse::<Timestamp>().unwrap().to_string(),
                tree: Id([0; 32]),
                paths: vec!["/data".into()],
                hostname: "h".into(),
                username: "u".into(),
                job: job.map(String::from),
                tags: vec![],
                parent: None,
                program_version: "test".into(),
                summary: Summary::default(),
            },
        }
    }

    /// Snapshots at these UTC times; returns the indices kept.
    fn kept(times: &[&str], rules: KeepRules) -> Vec<usize> {
        let snaps: Vec<_> = times
            .iter()
            .enumerate()
            .map(|(i, t)| snap(i as u8, t, Some("j")))
            .collect();
        let d = plan(&snaps, &rules, &TimeZone::UTC).unwrap();
        let mut k: Vec<usize> = d
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.0[0] as usize)
            .collect();
        k.sort();
        k
    }

    fn rules(f: impl FnOnce(&mut KeepRules)) -> KeepRules {
        let mut r = KeepRules::default();
        f(&mut r);
        r
    }

    #[test]
    fn table() {
        // Two snapshots a day, 10 days: 2026-03-01 .. 2026-03-10, at 01:00 and 13:00.
        let mut days = Vec::new();
        for d in 1..=10 {
            days.push(format!("2026-03-{d:02}T01:00:00Z"));
            days.push(format!("2026-03-{d:02}T13:00:00Z"));
        }
        let days: Vec<&str> = days.iter().map(String::as_str).collect();
        let cases: Vec<(&str, KeepRules, Vec<usize>)> = vec![
            ("last 3", rules(|r| r.last = Some(3)), vec![17, 18, 19]),
            (
                "daily 3: the newest of each of the last 3 days",
                rules(|r| r.daily = Some(3)),
                vec![15, 17, 19],
            ),
            (
                "last 1 + daily 2 overlap",
                rules(|r| {
                    r.last = Some(1);
                    r.daily = Some(2)
                }),
                vec![17, 19],
            ),
            (
                "hourly 4: four distinct hours",
                rules(|r| r.hourly = Some(4)),
                vec![16, 17, 18, 19],
            ),
            (
                // 2026-03-01 is a Sunday (ISO week 9); 02..08 week 10; 09..10 week 11.
                "weekly 3",
                rules(|r| r.weekly = Some(3)),
                vec![1, 15, 19],
            ),
            (
                "monthly 5: only one month",
                rules(|r| r.monthly = Some(5)),
                vec![19],
            ),
            (
                "within 2d of the newest (10th 13:00): after the 8th 13:00",
                rules(|r| r.within = Some("2d".into())),
                vec![16, 17, 18, 19],
            ),
            (
                "more than there are",
                rules(|r| r.last = Some(100)),
                (0..20).collect(),
            ),
        ];
        for (name, r, want) in cases {
            assert_eq!(kept(&days, r), want, "{name}");
        }
    }

    #[test]
    fn monthly_and_yearly_across_years() {
        let times = [
            "2024-12-31T23:00:00Z",
            "2025-01-15T10:00:00Z",
            "2025-01-31T10:00:00Z",
            "2025-02-28T10:00:00Z",
            "2025-12-01T10:00:00Z",
            "2026-01-01T00:30:00Z",
        ];
        assert_eq!(kept(&times, rules(|r| r.monthly = Some(3))), vec![3, 4, 5]);
        assert_eq!(kept(&times, rules(|r| r.yearly = Some(2))), vec![4, 5]);
        assert_eq!(kept(&times, rules(|r| r.yearly = Some(10))), vec![0, 4, 5]);
    }

    #[test]
    fn periods_follow_the_time_zone() {
        // 23:30 UTC on the 1st is the 2nd in Berlin: two different days there, one in UTC.
        let snaps = vec![
            snap(0, "2026-06-01T10:00:00Z", Some("j")),
            snap(1, "2026-06-01T23:30:00Z", Some("j")),
        ];
        let r = rules(|r| r.daily = Some(5));
        let utc = plan(&snaps, &r, &TimeZone::UTC).unwrap();
        assert_eq!(utc.iter().filter(|d| d.keep).count(), 1);
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let be = plan(&snaps, &r, &berlin).unwrap();
        assert_eq!(be.iter().filter(|d| d.keep).count(), 2);
    }

    #[test]
    fn groups_are_separate_and_empty_rules_refused() {
        let snaps = vec![
            snap(0, "2026-01-01T00:00:00Z", Some("a")),
            snap(1, "2026-01-02T00:00:00Z", Some("a")),
            snap(2, "2026-01-01T00:00:00Z", Some("b")),
            snap(3, "2026-01-01T00:00:00Z", None),
        ];
        let d = plan(&snaps, &rules(|r| r.last = Some(1)), &TimeZone::UTC).unwrap();
        let mut k: Vec<u8> = d.iter().filter(|d| d.keep).map(|d| d.id.0[0]).collect();
        k.sort();
        assert_eq!(k, vec![1, 2, 3]);
        assert!(plan(&snaps, &KeepRules::default(), &TimeZone::UTC).is_err());
    }

    #[test]
    fn durations() {
        assert!(parse_within("30d").is_ok());
        assert!(parse_within("1y6m").is_ok());
        assert!(parse_within("12h").is_ok());
        for bad in ["", "30", "d", "3x", "-1d"] {
            assert!(parse_within(bad).is_err(), "{bad}");
        }
    }
}
