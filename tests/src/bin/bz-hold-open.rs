//! A test helper for the Windows suite: holds FILE open without sharing it (as Outlook
//! holds an open .pst) until its standard input closes. Prints `held` once it does.
//!     bz-hold-open.exe FILE

#[cfg(windows)]
fn main() {
    use std::io::{Read, Write};
    use std::os::windows::fs::OpenOptionsExt;
    let path = std::env::args_os()
        .nth(1)
        .expect("usage: bz-hold-open FILE");
    let _file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .share_mode(0)
        .open(&path)
        .expect("opening the file");
    println!("held");
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

#[cfg(not(windows))]
fn main() {
    eprintln!("bz-hold-open is a Windows program (run by the Windows tests under Wine)");
    std::process::exit(2);
}
