//! The Windows build under test: the real `backazon.exe`, run by Wine from these Linux
//! tests, on the same temporary folders (Wine's drive `Z:` is `/`) and the same Garage
//! server. `ci/test.sh` builds the exe and prepares the Wine prefix (`ci/windows.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Env, Run, PASSWORD};

/// `backazon.exe` of the Windows cross build (`BACKAZON_EXE` to use another one).
pub fn exe() -> PathBuf {
    if let Some(p) = std::env::var_os("BACKAZON_EXE") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/windows/x86_64-pc-windows-gnu/release/backazon.exe");
    assert!(
        p.exists(),
        "{} is missing: build it first (bash ci/windows.sh build), as ci/test.sh does",
        p.display()
    );
    p
}

/// Wine's loader, and the prefix that has the test set-up (`ci/windows.sh`).
pub fn wine() -> (PathBuf, PathBuf) {
    let loader = std::env::var_os("BACKAZON_WINE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/wine/wine64"));
    let prefix = std::env::var_os("WINEPREFIX")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".wine-backazon")
        });
    assert!(
        loader.exists()
            && prefix
                .join("drive_c/windows/system32/bcryptprimitives.dll")
                .exists(),
        "Wine or its prefix {} is not set up: run bash ci/windows.sh setup, as ci/test.sh does",
        prefix.display()
    );
    (loader, prefix)
}

/// A Linux path as Windows programs under Wine see it (`Z:\tmp\x`).
pub fn win(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap();
    format!("Z:{}", abs.to_string_lossy().replace('/', "\\"))
}

/// Where a Linux folder is recorded in a snapshot made under Wine (`/Z/tmp/x`).
pub fn recorded(path: &Path) -> String {
    format!("/Z{}", std::path::absolute(path).unwrap().to_string_lossy())
}

/// The user's folders in the prefix, as Windows programs there see them.
pub fn appdata() -> PathBuf {
    wine().1.join("drive_c/users/root/AppData/Roaming")
}

pub fn local_appdata() -> PathBuf {
    wine().1.join("drive_c/users/root/AppData/Local")
}

/// A Windows program under Wine, with the environment a test gives it.
pub fn command(program: &Path) -> Command {
    let (loader, prefix) = wine();
    let mut c = Command::new(loader);
    c.arg(program)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("WINEPREFIX", prefix)
        .env("WINEDEBUG", "-all")
        // Wine names Unix files in the locale's encoding: UTF-8, as on the machine.
        .env("LANG", "C.UTF-8")
        .stdin(std::process::Stdio::null());
    c
}

impl Env {
    /// `backazon.exe` under Wine with this test's repository (as a Windows path),
    /// password and cache.
    pub fn wine_command(&self) -> Command {
        let mut c = command(&exe());
        let repo = self.repo.to_string_lossy();
        let repo = if repo.starts_with("s3://") {
            repo.into_owned()
        } else {
            win(&self.repo)
        };
        c.env("BACKAZON_REPOSITORY", repo)
            .env("BACKAZON_PASSWORD", PASSWORD)
            .env("BACKAZON_CACHE_DIR", win(&self.cache))
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn wine(&self, args: &[&str]) -> Run {
        Run::from_output(self.wine_command().args(args))
    }
}
