//! On Windows, links WinFsp's DLL lazily, as the `winfsp` crate requires; elsewhere
//! there is nothing to do.

fn main() {
    #[cfg(windows)]
    winfsp::build::winfsp_link_delayload();
}
