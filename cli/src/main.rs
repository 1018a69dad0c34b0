//! The `backazon` program; all of it is in the library (src/lib.rs).

fn main() -> std::process::ExitCode {
    backazon::main()
}
