//! A benchmark helper (bench/console.sh): copies a repository's latest snapshot COUNT
//! times, spread over JOBS job names, two hosts and the hours before it, so that the
//! console can be timed over a repository of many snapshots without making each by a
//! backup. The password is BACKAZON_PASSWORD.
//!     bz-many-snapshots REPO COUNT JOBS

#[cfg(not(target_os = "linux"))]
fn main() {}

#[cfg(target_os = "linux")]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, repo, count, jobs] = args.as_slice() else {
        panic!("usage: bz-many-snapshots REPO COUNT JOBS");
    };
    let count: usize = count.parse().expect("COUNT");
    let jobs: usize = jobs.parse().expect("JOBS");
    let password = std::env::var("BACKAZON_PASSWORD").expect("BACKAZON_PASSWORD");
    let repo =
        backazon_engine::Repository::open(backazon_e2e::backend_of(repo), password.as_bytes())
            .expect("opening the repository");
    let latest = repo.find_snapshot("latest").expect("a snapshot to copy");
    let t0: jiff::Timestamp = latest.snapshot.time.parse().expect("its time");
    for i in 0..count {
        let mut s = latest.snapshot.clone();
        s.time = (t0 - jiff::SignedDuration::from_hours(1 + i as i64)).to_string();
        s.job = Some(format!("job{:02}", i % jobs));
        s.hostname = if i % 2 == 0 { "office-pc" } else { "laptop" }.into();
        s.tags = vec![format!("week{}", i / 168)];
        repo.save_snapshot(&s).expect("saving a snapshot");
    }
    println!("{count} snapshots added");
}
