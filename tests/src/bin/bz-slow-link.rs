//! A wide-area link for benchmarks and tests (`backazon_e2e::link`): listens on LISTEN and
//! forwards each connection to UPSTREAM, every byte delayed DELAY_MS in each direction, at
//! most WINDOW_KIB on the way per direction (default 6144: Linux's largest TCP receive
//! window by default).
//!     bz-slow-link LISTEN UPSTREAM DELAY_MS [WINDOW_KIB]

#[cfg(target_os = "linux")]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: bz-slow-link LISTEN UPSTREAM DELAY_MS [WINDOW_KIB]");
        std::process::exit(2);
    }
    let listener = std::net::TcpListener::bind(&args[0]).expect("listening");
    let delay = std::time::Duration::from_millis(args[2].parse().expect("DELAY_MS"));
    let window = args
        .get(3)
        .map_or(6144, |w| w.parse::<usize>().expect("WINDOW_KIB"))
        << 10;
    println!("ready");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    backazon_e2e::link::serve(listener, args[1].clone(), delay, window);
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("bz-slow-link runs beside the Linux benchmarks and tests");
    std::process::exit(2);
}
