//! When a job runs: `hourly`, `daily HH:MM`, `weekly DAY HH:MM`, `monthly DAY HH:MM`, or a
//! cron expression (5 fields, or 6 with seconds first). Times are wall-clock times in the
//! local time zone:
//! - a time skipped by a DST change (02:30 on the spring-forward night) runs at the same
//!   distance after the gap (03:30), once;
//! - a time that happens twice (the fall-back night) runs at its first occurrence, once;
//! - `monthly 31 ...` runs on the last day of shorter months (30th, 28th or 29th).
//!
//! Cron: fields are lists of `*`, `N`, `A-B`, `*/S`, `A-B/S`; months and weekdays also by
//! name (`jan`, `mon`); weekday 0 and 7 are Sunday. When both day of month and weekday are
//! restricted, a day matching either runs (as in Vixie cron). `@hourly`, `@daily`,
//! `@weekly`, `@monthly` and `@yearly` are accepted too.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    seconds: u64,
    minutes: u64,
    hours: u32,
    /// Bit d set: day of month d (1..=31).
    days: u32,
    /// Bit m set: month m (1..=12).
    months: u16,
    /// Bit w set: weekday w, 0 = Sunday.
    weekdays: u8,
    day_restricted: bool,
    weekday_restricted: bool,
    /// `monthly DAY`: DAY, or the month's last day when the month is shorter.
    month_day_clamped: Option<u8>,
}

const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

fn all(lo: u32, hi: u32) -> u64 {
    (lo..=hi).fold(0, |acc, b| acc | 1 << b)
}

fn weekday_number(s: &str) -> Option<u32> {
    const FULL: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    let l = s.to_ascii_lowercase();
    (0..7)
        .find(|&i| l == DAY_NAMES[i] || l == FULL[i])
        .map(|i| i as u32)
}

fn hh_mm(s: &str) -> Result<(u32, u32), String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not a time: use HH:MM (24-hour)"))?;
    let h: u32 = h
        .parse()
        .map_err(|_| format!("{s:?} is not a time: use HH:MM (24-hour)"))?;
    let m: u32 = m
        .parse()
        .map_err(|_| format!("{s:?} is not a time: use HH:MM (24-hour)"))?;
    if h > 23 || m > 59 {
        return Err(format!("{s:?} is not a time: hours 0-23, minutes 0-59"));
    }
    Ok((h, m))
}

/// One cron field as a bit set over `lo..=hi`.
fn field(spec: &str, lo: u32, hi: u32, names: &[&str], what: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("cron {what} field {spec:?}: {why}");
    let value = |s: &str| -> Result<u32, String> {
        if let Some(p) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            // Month names count from 1, weekday names from 0.
            return Ok(p as u32 + if what == "month" { 1 } else { 0 });
        }
        let v: u32 = s
            .parse()
            .map_err(|_| bad(&format!("{s:?} is not a number")))?;
        // Weekday 7 is Sunday too.
        let v = if what == "weekday" && v == 7 { 0 } else { v };
        if v < lo || v > hi {
            return Err(bad(&format!("{v} is outside {lo}-{hi}")));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s.parse().map_err(|_| bad("the step is not a number"))?;
                if s == 0 {
                    return Err(bad("a step of 0"));
                }
                (r, s)
            }
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (lo, if what == "weekday" { 6 } else { hi })
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            // `fri-sun`: 5-0 means 5..=7 with 7 as Sunday.
            let b = if what == "weekday" && b < a && b == 0 {
                7
            } else {
                b
            };
            if b < a {
                return Err(bad("a range runs backwards"));
            }
            (a, b)
        } else {
            let a = value(range)?;
            (a, if part.contains('/') { hi } else { a })
        };
        let mut v = a;
        while v <= b {
            bits |= 1 << (if what == "weekday" { v % 7 } else { v });
            v += step;
        }
    }
    if bits == 0 {
        return Err(bad("matches nothing"));
    }
    Ok(bits)
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let base = Schedule {
            seconds: 1,
            minutes: 1,
            hours: 1,
            days: all(1, 31) as u32,
            months: all(1, 12) as u16,
            weekdays: all(0, 6) as u8,
            day_restricted: false,
            weekday_restricted: false,
            month_day_clamped: None,
        };
        let hint =
            "use hourly, daily HH:MM, weekly DAY HH:MM, monthly DAY HH:MM or a cron expression";
        let first = words.first().map(|w| w.to_ascii_lowercase());
        match (first.as_deref(), words.len()) {
            (None, _) => Err(format!("an empty schedule: {hint}")),
            (Some("hourly" | "@hourly"), 1) => Ok(Schedule {
                hours: all(0, 23) as u32,
                ..base
            }),
            (Some("@daily" | "@midnight"), 1) => Ok(base),
            (Some("@weekly"), 1) => Ok(Schedule {
                weekdays: 1,
                weekday_restricted: true,
                ..base
            }),
            (Some("@monthly"), 1) => Ok(Schedule {
                days: 1 << 1,
                day_restricted: true,
                ..base
            }),
            (Some("@yearly" | "@annually"), 1) => Ok(Schedule {
                days: 1 << 1,
                months: 1 << 1,
                day_restricted: true,
                ..base
            }),
            (Some("daily"), 2) => {
                let (h, m) = hh_mm(words[1])?;
                Ok(Schedule {
                    hours: 1 << h,
                    minutes: 1 << m,
                    ..base
                })
            }
            (Some("weekly"), 3) => {
                let d = weekday_number(words[1]).ok_or_else(|| {
                    format!("{:?} is not a weekday: use mon, tue, ... sun", words[1])
                })?;
                let (h, m) = hh_mm(words[2])?;
                Ok(Schedule {
                    hours: 1 << h,
                    minutes: 1 << m,
                    weekdays: 1 << d,
                    weekday_restricted: true,
                    ..base
                })
            }
            (Some("monthly"), 3) => {
                let d: u8 = words[1]
                    .parse()
                    .ok()
                    .filter(|d| (1..=31).contains(d))
                    .ok_or_else(|| format!("{:?} is not a day of the month (1-31)", words[1]))?;
                let (h, m) = hh_mm(words[2])?;
                Ok(Schedule {
                    hours: 1 << h,
                    minutes: 1 << m,
                    month_day_clamped: Some(d),
                    day_restricted: true,
                    ..base
                })
            }
            (Some("hourly" | "daily" | "weekly" | "monthly"), _) => {
                Err(format!("{text:?} is not a schedule: {hint}"))
            }
            (_, 5 | 6) => {
                let (sec, rest) = if words.len() == 6 {
                    (field(words[0], 0, 59, &[], "second")?, &words[1..])
                } else {
                    (1, &words[..]) // five fields: second 0
                };
                Ok(Schedule {
                    seconds: sec,
                    minutes: field(rest[0], 0, 59, &[], "minute")?,
                    hours: field(rest[1], 0, 23, &[], "hour")? as u32,
                    days: field(rest[2], 1, 31, &[], "day-of-month")? as u32,
                    months: field(rest[3], 1, 12, &MONTH_NAMES, "month")? as u16,
                    weekdays: field(rest[4], 0, 7, &DAY_NAMES, "weekday")? as u8,
                    day_restricted: !rest[2].starts_with('*'),
                    weekday_restricted: !rest[4].starts_with('*'),
                    ..base
                })
            }
            _ => Err(format!("{text:?} is not a schedule: {hint}")),
        }
    }

    fn date_matches(&self, d: Date) -> bool {
        if self.months & (1 << d.month() as u32) == 0 {
            return false;
        }
        if let Some(want) = self.month_day_clamped {
            let last = d.days_in_month() as u8;
            return d.day() as u8 == want.min(last);
        }
        let dom = self.days & (1 << d.day() as u32) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset() as u32) != 0;
        match (self.day_restricted, self.weekday_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The first run strictly after `after`, in `tz`; None if there is none in the next
    /// 10 years (a schedule such as `0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone()).datetime();
        let bits = |mask: u64, hi: u32| (0..=hi).filter(move |b| mask & (1 << b) != 0);
        let mut date = start.date();
        // Days on which a candidate lies before `start` in civil time still get looked
        // at: after a fall-back change the civil clock repeats, so compare instants.
        let first_day = date;
        for _ in 0..(366 * 10) {
            if self.date_matches(date) {
                for h in bits(self.hours as u64, 23) {
                    for m in bits(self.minutes, 59) {
                        // Skip whole minutes that end before the start (only on the first day).
                        if date == first_day
                            && (h, m) < (start.hour() as u32, start.minute() as u32)
                        {
                            continue;
                        }
                        for s in bits(self.seconds, 59) {
                            let t = Time::new(h as i8, m as i8, s as i8, 0).ok()?;
                            let dt = DateTime::from_parts(date, t);
                            let Ok(z) = tz.to_ambiguous_zoned(dt).compatible() else {
                                continue;
                            };
                            if z.timestamp() > after {
                                return Some(z.timestamp());
                            }
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    /// `after` and the wanted next runs as civil times with offsets (RFC 3339).
    fn next_n(schedule: &str, zone: &str, after: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(schedule).unwrap();
        let z = tz(zone);
        let mut t: Timestamp = after.parse().unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next_after(t, &z).expect("a next run");
            out.push(
                t.to_zoned(z.clone())
                    .strftime("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string(),
            );
        }
        out
    }

    #[test]
    fn simple_forms() {
        let cases: &[(&str, &str, &str, &[&str])] = &[
            (
                "hourly",
                "UTC",
                "2026-01-01T10:00:00Z",
                &["2026-01-01T11:00:00+00:00", "2026-01-01T12:00:00+00:00"],
            ),
            (
                "daily 02:00",
                "UTC",
                "2026-01-01T01:59:59Z",
                &["2026-01-01T02:00:00+00:00", "2026-01-02T02:00:00+00:00"],
            ),
            (
                // Exactly at a run: the next one, never the same.
                "daily 02:00",
                "UTC",
                "2026-01-01T02:00:00Z",
                &["2026-01-02T02:00:00+00:00"],
            ),
            (
                // 2026-01-01 is a Thursday; the next Sunday is the 4th; across a year.
                "weekly sun 23:30",
                "UTC",
                "2025-12-31T00:00:00Z",
                &["2026-01-04T23:30:00+00:00", "2026-01-11T23:30:00+00:00"],
            ),
            (
                "weekly Monday 00:00",
                "UTC",
                "2026-01-04T23:59:00Z",
                &["2026-01-05T00:00:00+00:00"],
            ),
            (
                // The 31st: short months run on their last day, leap years on the 29th.
                "monthly 31 03:00",
                "UTC",
                "2028-01-31T03:00:00Z",
                &[
                    "2028-02-29T03:00:00+00:00",
                    "2028-03-31T03:00:00+00:00",
                    "2028-04-30T03:00:00+00:00",
                ],
            ),
            (
                "monthly 30 03:00",
                "UTC",
                "2027-01-31T00:00:00Z",
                &["2027-02-28T03:00:00+00:00", "2027-03-30T03:00:00+00:00"],
            ),
            (
                "monthly 1 00:00",
                "UTC",
                "2026-12-15T00:00:00Z",
                &["2027-01-01T00:00:00+00:00"],
            ),
        ];
        for (s, zone, after, want) in cases {
            assert_eq!(
                next_n(s, zone, after, want.len()),
                *want,
                "{s} after {after}"
            );
        }
    }

    #[test]
    fn cron() {
        let cases: &[(&str, &str, &[&str])] = &[
            // Seconds field.
            (
                "*/15 * * * * *",
                "2026-01-01T00:00:07Z",
                &["2026-01-01T00:00:15+00:00", "2026-01-01T00:00:30+00:00"],
            ),
            // Five fields: second 0.
            (
                "30 4 * * *",
                "2026-01-01T04:30:00Z",
                &["2026-01-02T04:30:00+00:00"],
            ),
            // Feb 29 only: the next leap year.
            (
                "0 12 29 2 *",
                "2026-03-01T00:00:00Z",
                &["2028-02-29T12:00:00+00:00", "2032-02-29T12:00:00+00:00"],
            ),
            // The 31st skips months without one.
            (
                "0 0 31 * *",
                "2026-01-31T00:00:00Z",
                &["2026-03-31T00:00:00+00:00", "2026-05-31T00:00:00+00:00"],
            ),
            // Weekdays by name and range, 7 = Sunday.
            (
                "0 9 * * mon-fri",
                "2026-01-02T09:00:00Z", // a Friday
                &["2026-01-05T09:00:00+00:00"],
            ),
            (
                "0 9 * * 7",
                "2026-01-01T00:00:00Z",
                &["2026-01-04T09:00:00+00:00"],
            ),
            // Both day fields restricted: either matches (the 13th, or any Friday).
            (
                "0 0 13 * 5",
                "2026-02-01T00:00:00Z",
                &[
                    "2026-02-06T00:00:00+00:00",
                    "2026-02-13T00:00:00+00:00",
                    "2026-02-20T00:00:00+00:00",
                ],
            ),
            // Lists and ranges with steps, month names.
            (
                "0 0,30 8-17/4 1 jan,jul *",
                "2026-01-31T00:00:00Z",
                &[
                    "2026-07-01T08:00:00+00:00",
                    "2026-07-01T08:30:00+00:00",
                    "2026-07-01T12:00:00+00:00",
                ],
            ),
            // Year end.
            (
                "@yearly",
                "2026-06-01T00:00:00Z",
                &["2027-01-01T00:00:00+00:00"],
            ),
        ];
        for (s, after, want) in cases {
            assert_eq!(
                next_n(s, "UTC", after, want.len()),
                *want,
                "{s} after {after}"
            );
        }
    }

    #[test]
    fn dst_spring_forward() {
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        assert_eq!(
            next_n(
                "daily 02:30",
                "America/New_York",
                "2026-03-07T12:00:00-05:00",
                3
            ),
            [
                "2026-03-08T03:30:00-04:00", // the skipped 02:30, once, an hour later
                "2026-03-09T02:30:00-04:00",
                "2026-03-10T02:30:00-04:00",
            ]
        );
        // A time after the gap is unaffected; the day before is 24 hours, that day 23.
        assert_eq!(
            next_n(
                "daily 04:00",
                "America/New_York",
                "2026-03-07T04:00:00-05:00",
                2
            ),
            ["2026-03-08T04:00:00-04:00", "2026-03-09T04:00:00-04:00"]
        );
        // Hourly over the gap: 01:00 then 03:00 (there is no 02:00).
        assert_eq!(
            next_n("hourly", "America/New_York", "2026-03-08T00:30:00-05:00", 3),
            [
                "2026-03-08T01:00:00-05:00",
                "2026-03-08T03:00:00-04:00",
                "2026-03-08T04:00:00-04:00",
            ]
        );
        // Europe: 2026-03-29, 02:00 CET -> 03:00 CEST.
        assert_eq!(
            next_n(
                "0 30 2 * * *",
                "Europe/Berlin",
                "2026-03-28T03:00:00+01:00",
                2
            ),
            ["2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00"]
        );
    }

    #[test]
    fn dst_fall_back() {
        // New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        assert_eq!(
            next_n(
                "daily 01:30",
                "America/New_York",
                "2026-10-31T12:00:00-04:00",
                3
            ),
            [
                "2026-11-01T01:30:00-04:00", // first occurrence only
                "2026-11-02T01:30:00-05:00",
                "2026-11-03T01:30:00-05:00",
            ]
        );
        // Started during the second 01:xx hour, after the first 01:30: not run again.
        assert_eq!(
            next_n(
                "daily 01:30",
                "America/New_York",
                "2026-11-01T01:10:00-05:00",
                1
            ),
            ["2026-11-02T01:30:00-05:00"]
        );
        // Hourly through the repeated hour runs at each wall-clock hour once.
        assert_eq!(
            next_n("hourly", "America/New_York", "2026-11-01T00:30:00-04:00", 3),
            [
                "2026-11-01T01:00:00-04:00",
                "2026-11-01T02:00:00-05:00",
                "2026-11-01T03:00:00-05:00",
            ]
        );
        // Lord Howe Island shifts by 30 minutes.
        assert_eq!(
            next_n(
                "daily 01:45",
                "Australia/Lord_Howe",
                "2026-04-04T12:00:00+11:00",
                2
            ),
            ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (bad, says) in [
            ("", "empty"),
            ("daily", "not a schedule"),
            ("daily 24:00", "hours 0-23"),
            ("daily 2pm", "HH:MM"),
            ("weekly funday 10:00", "weekday"),
            ("monthly 32 10:00", "day of the month"),
            ("* * * *", "not a schedule"),
            ("61 * * * *", "minute field"),
            ("0 0 * 13 *", "month field"),
            ("*/0 * * * *", "step of 0"),
            ("0 0 * * 8", "weekday field"),
            ("5-1 * * * *", "backwards"),
        ] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        // Never: no run in the next 10 years.
        let s = Schedule::parse("0 0 30 2 *").unwrap();
        assert_eq!(s.next_after(Timestamp::UNIX_EPOCH, &TimeZone::UTC), None);
    }
}
