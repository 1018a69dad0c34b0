//! Windows: a backup that reads its files from a Volume Shadow Copy made for the run, so
//! files other programs hold open (Outlook's .pst, a QuickBooks company file) are read
//! whole and as they were at one instant. The snapshot records the live paths (see the
//! engine's `SourceMap`); the shadow copies are released when the run ends.
//!
//! This is the requester side of VSS, `IVssBackupComponents`. The `windows` crate has
//! VSS's types, constants and `IVssAsync`, but not this interface (it is missing from the
//! metadata the crate is generated from), so its table of methods is declared here in
//! the order of vsbackup.h and only the methods used are typed.
//!
//! Built into backazon.exe by the cross build here and run under Wine, which has no
//! shadow copy service: there `--vss` ends with a clear error, exit 1 (a test in
//! tests/tests/windows.rs). A real shadow copy needs real Windows; README says so.

/// The methods of `IVssBackupComponents` after IUnknown's three, in vsbackup.h order.
/// The slot numbers used below are looked up in this table, so they cannot drift from it.
#[cfg_attr(not(windows), allow(dead_code))]
const METHODS: [&str; 48] = [
    "GetWriterComponentsCount",
    "GetWriterComponents",
    "InitializeForBackup",
    "SetBackupState",
    "InitializeForRestore",
    "SetRestoreState",
    "GatherWriterMetadata",
    "GetWriterMetadataCount",
    "GetWriterMetadata",
    "FreeWriterMetadata",
    "AddComponent",
    "PrepareForBackup",
    "AbortBackup",
    "GatherWriterStatus",
    "GetWriterStatusCount",
    "FreeWriterStatus",
    "GetWriterStatus",
    "SetBackupSucceeded",
    "SetBackupOptions",
    "SetSelectedForRestore",
    "SetRestoreOptions",
    "SetAdditionalRestores",
    "SetPreviousBackupStamp",
    "SaveAsXML",
    "BackupComplete",
    "AddAlternativeLocationMapping",
    "AddRestoreSubcomponent",
    "SetFileRestoreStatus",
    "AddNewTarget",
    "SetRangesFilePath",
    "PreRestore",
    "PostRestore",
    "SetContext",
    "StartSnapshotSet",
    "AddToSnapshotSet",
    "DoSnapshotSet",
    "DeleteSnapshots",
    "ImportSnapshots",
    "BreakSnapshotSet",
    "GetSnapshotProperties",
    "Query",
    "IsVolumeSupported",
    "DisableWriterClasses",
    "EnableWriterClasses",
    "DisableWriterInstances",
    "ExposeSnapshot",
    "RevertToSnapshot",
    "QueryRevertStatus",
];

/// The vtable slot of a method: IUnknown's three, then its place in [`METHODS`].
#[cfg_attr(not(windows), allow(dead_code))]
const fn slot(name: &str) -> usize {
    let mut i = 0;
    while i < METHODS.len() {
        if const_eq(METHODS[i], name) {
            return 3 + i;
        }
        i += 1;
    }
    panic!("not a method of IVssBackupComponents");
}

const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The volume a path is on, as VSS names it (`C:\`), for paths like `C:\Users\me`.
#[cfg_attr(not(windows), allow(dead_code))]
fn volume_of(path: &str) -> Option<String> {
    let b = path.as_bytes();
    (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
        .then(|| format!("{}:\\", (b[0] as char).to_ascii_uppercase()))
}

#[cfg(windows)]
pub use imp::ShadowCopies;

#[cfg(windows)]
mod imp {
    use std::ffi::c_void;
    use std::os::windows::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    use anyhow::{anyhow, bail, Context, Result};
    use backazon_engine::backup::SourceMap;
    use windows::core::{Interface, GUID, HRESULT, PCWSTR};
    use windows::Win32::Storage::FileSystem::GetVolumePathNameW;
    use windows::Win32::Storage::Vss::{
        IVssAsync, VSS_BT_COPY, VSS_CTX_BACKUP, VSS_SNAPSHOT_PROP, VSS_S_ASYNC_FINISHED,
    };
    use windows::Win32::System::Com::{CoInitializeEx, COINIT_MULTITHREADED};

    use super::{slot, volume_of};

    // vsbackup.h's CreateVssBackupComponents and VssFreeSnapshotProperties call these
    // exports of VssApi.dll; neither is in the `windows` crate.
    #[link(name = "vssapi")]
    extern "system" {
        fn CreateVssBackupComponentsInternal(out: *mut *mut c_void) -> HRESULT;
        fn VssFreeSnapshotPropertiesInternal(prop: *mut VSS_SNAPSHOT_PROP);
    }

    /// The shadow copies of the volumes holding a run's paths; released on drop.
    pub struct ShadowCopies {
        components: *mut c_void,
        /// (volume `C:\`, its shadow copy's root `\\?\GLOBALROOT\Device\...\`)
        views: Vec<(String, String)>,
    }

    impl ShadowCopies {
        /// Makes one shadow copy set for every volume under `paths`. Needs administrator
        /// rights (the Backup Operators privilege).
        pub fn create(paths: &[PathBuf]) -> Result<ShadowCopies> {
            // SAFETY: COM calls on this thread's apartment; every pointer handed to VSS
            // is valid for the call, and every returned object is released in Drop.
            unsafe {
                // S_FALSE (already initialised) is fine; a different model is not.
                CoInitializeEx(None, COINIT_MULTITHREADED)
                    .ok()
                    .context("starting COM for the shadow copy")?;
                let mut components = std::ptr::null_mut();
                CreateVssBackupComponentsInternal(&mut components)
                    .ok()
                    .context(
                        "creating a Volume Shadow Copy (run the backup as an administrator)",
                    )?;
                let mut sc = ShadowCopies {
                    components,
                    views: Vec::new(),
                };
                sc.call1(slot("InitializeForBackup"), std::ptr::null_mut())?;
                sc.call_i32(slot("SetContext"), VSS_CTX_BACKUP.0)?;
                sc.set_backup_state()?;
                sc.wait_for(slot("GatherWriterMetadata"))?;
                let mut set = GUID::zeroed();
                sc.call1(slot("StartSnapshotSet"), (&mut set as *mut GUID).cast())?;
                let mut volumes: Vec<(String, GUID)> = Vec::new();
                for p in paths {
                    let volume = volume_path(p)?;
                    if volumes.iter().any(|(v, _)| *v == volume) {
                        continue;
                    }
                    let mut snap = GUID::zeroed();
                    sc.add_to_snapshot_set(&volume, &mut snap)
                        .with_context(|| format!("adding volume {volume} to the shadow copy"))?;
                    volumes.push((volume, snap));
                }
                sc.wait_for(slot("PrepareForBackup"))?;
                sc.wait_for(slot("DoSnapshotSet"))
                    .context("making the shadow copy")?;
                for (volume, snap) in volumes {
                    let device = sc.device_of(snap)?;
                    sc.views.push((volume, format!("{device}\\")));
                }
                Ok(sc)
            }
        }

        /// Each volume's live path mapped to its shadow copy, for `BackupOptions::source`.
        pub fn source_map(&self) -> SourceMap {
            SourceMap {
                views: self
                    .views
                    .iter()
                    .map(|(v, s)| (PathBuf::from(v), PathBuf::from(s)))
                    .collect(),
            }
        }

        unsafe fn method(&self, slot: usize) -> *const c_void {
            let vtable = *(self.components as *const *const *const c_void);
            *vtable.add(slot)
        }

        unsafe fn call1(&self, slot: usize, arg: *mut c_void) -> Result<()> {
            let f: unsafe extern "system" fn(*mut c_void, *mut c_void) -> HRESULT =
                std::mem::transmute(self.method(slot));
            f(self.components, arg)
                .ok()
                .map_err(|e| anyhow!("{}: {e}", super::METHODS[slot - 3]))
        }

        unsafe fn call_i32(&self, slot: usize, arg: i32) -> Result<()> {
            let f: unsafe extern "system" fn(*mut c_void, i32) -> HRESULT =
                std::mem::transmute(self.method(slot));
            f(self.components, arg)
                .ok()
                .map_err(|e| anyhow!("{}: {e}", super::METHODS[slot - 3]))
        }

        /// A copy backup: applications' own backup history (logs truncated, "last backed
        /// up" stamps) is left alone. C++ `bool` arguments are one byte.
        unsafe fn set_backup_state(&self) -> Result<()> {
            let f: unsafe extern "system" fn(*mut c_void, bool, bool, i32, bool) -> HRESULT =
                std::mem::transmute(self.method(slot("SetBackupState")));
            f(self.components, false, false, VSS_BT_COPY.0, false)
                .ok()
                .context("SetBackupState")
        }

        unsafe fn add_to_snapshot_set(&self, volume: &str, snap: &mut GUID) -> Result<()> {
            let wide: Vec<u16> = volume.encode_utf16().chain([0]).collect();
            let f: unsafe extern "system" fn(*mut c_void, *const u16, GUID, *mut GUID) -> HRESULT =
                std::mem::transmute(self.method(slot("AddToSnapshotSet")));
            // GUID_NULL: the system chooses the provider.
            f(self.components, wide.as_ptr(), GUID::zeroed(), snap)
                .ok()
                .context("AddToSnapshotSet")
        }

        /// Calls a method that starts an asynchronous step and waits for it to finish.
        unsafe fn wait_for(&self, slot: usize) -> Result<()> {
            let name = super::METHODS[slot - 3];
            let mut raw = std::ptr::null_mut();
            self.call1(slot, (&mut raw as *mut *mut c_void).cast())?;
            let job = IVssAsync::from_raw(raw);
            job.Wait(u32::MAX).map_err(|e| anyhow!("{name}: {e}"))?;
            let mut status = HRESULT(0);
            job.QueryStatus(&mut status, std::ptr::null_mut())
                .map_err(|e| anyhow!("{name}: {e}"))?;
            if status != VSS_S_ASYNC_FINISHED {
                bail!(
                    "{name} did not finish: {}",
                    windows::core::Error::from_hresult(status)
                );
            }
            Ok(())
        }

        unsafe fn device_of(&self, snap: GUID) -> Result<String> {
            let mut prop = VSS_SNAPSHOT_PROP::default();
            let f: unsafe extern "system" fn(*mut c_void, GUID, *mut VSS_SNAPSHOT_PROP) -> HRESULT =
                std::mem::transmute(self.method(slot("GetSnapshotProperties")));
            f(self.components, snap, &mut prop)
                .ok()
                .context("GetSnapshotProperties")?;
            let device = prop.m_pwszSnapshotDeviceObject;
            let device = (!device.is_null())
                .then(|| PCWSTR(device).to_string().ok())
                .flatten();
            VssFreeSnapshotPropertiesInternal(&mut prop);
            device.context("the shadow copy has no device name")
        }
    }

    impl Drop for ShadowCopies {
        fn drop(&mut self) {
            // SAFETY: `components` came from CreateVssBackupComponentsInternal and is
            // released once; BackupComplete tells writers the copy is done, and releasing
            // the object deletes the (non-persistent) shadow copies.
            unsafe {
                let _ = self.wait_for(slot("BackupComplete"));
                let vtable = *(self.components as *const *const *const c_void);
                let release: unsafe extern "system" fn(*mut c_void) -> u32 =
                    std::mem::transmute(*vtable.add(2));
                release(self.components);
            }
        }
    }

    /// The volume mount point holding `path` (`C:\`, or a folder a volume is mounted on).
    fn volume_path(path: &Path) -> Result<String> {
        let abs = std::path::absolute(path)?;
        let wide: Vec<u16> = abs.as_os_str().encode_wide().chain([0]).collect();
        let mut out = vec![0u16; 1024];
        // SAFETY: both buffers are valid and NUL-terminated/sized as passed.
        unsafe { GetVolumePathNameW(PCWSTR(wide.as_ptr()), &mut out) }
            .with_context(|| format!("finding the volume of {}", abs.display()))?;
        let end = out.iter().position(|&c| c == 0).unwrap_or(out.len());
        let v = String::from_utf16_lossy(&out[..end]);
        Ok(volume_of(&v).filter(|d| d.len() == v.len()).unwrap_or(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_vsbackup_h() {
        // Spot checks against the header's order (IUnknown takes slots 0..3).
        assert_eq!(slot("GetWriterComponentsCount"), 3);
        assert_eq!(slot("InitializeForBackup"), 5);
        assert_eq!(slot("SetBackupState"), 6);
        assert_eq!(slot("GatherWriterMetadata"), 9);
        assert_eq!(slot("PrepareForBackup"), 14);
        assert_eq!(slot("BackupComplete"), 27);
        assert_eq!(slot("SetContext"), 35);
        assert_eq!(slot("StartSnapshotSet"), 36);
        assert_eq!(slot("AddToSnapshotSet"), 37);
        assert_eq!(slot("DoSnapshotSet"), 38);
        assert_eq!(slot("GetSnapshotProperties"), 42);
        assert_eq!(slot("QueryRevertStatus"), 50);
        let mut names = METHODS.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), METHODS.len(), "a method listed twice");
    }

    #[test]
    fn volumes_are_drive_roots() {
        assert_eq!(volume_of(r"c:\Users\me").as_deref(), Some(r"C:\"));
        assert_eq!(volume_of(r"D:").as_deref(), Some(r"D:\"));
        assert_eq!(volume_of(r"\\server\share"), None);
        assert_eq!(volume_of("/home"), None);
    }
}
