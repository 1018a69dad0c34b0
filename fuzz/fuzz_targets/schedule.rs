//! Job schedules (`daily 02:30`, `weekly sun 03:00`, cron expressions): any text parses
//! or is refused, and the next run after a time is later than it, in any time zone.
#![no_main]
use backazon::schedule::Schedule;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = Schedule::parse(text) {
        let at = Timestamp::from_second(1_796_000_000).unwrap();
        for tz in [TimeZone::UTC, TimeZone::fixed(jiff::tz::offset(-9))] {
            if let Some(next) = s.next_after(at, &tz) {
                assert!(next > at, "{text:?}: next run {next} not after {at}");
            }
        }
    }
});
