//! Windows: the daemon as a service of the Service Control Manager, through the
//! `windows-service` crate (Mullvad's; the SCM's calls and the service entry point).
//!
//! Why a service and not a scheduled task at logon: a service runs from boot with nobody
//! logged on (a small office's server, a PC left on overnight), as LocalSystem it reads
//! every file a job names and may make Volume Shadow Copies, and the SCM restarts it
//! after a failure. What it needs of the installing user (jobs file, state, cache, AWS
//! profile) is passed on its command line (`service run --profile ...`).

use std::ffi::OsString;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_dispatcher;
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

use crate::commands::service::{RunArgs, ServiceStatus as Status, WindowsService};
use crate::sys::Signal;

const ERROR_ACCESS_DENIED: i32 = 5;
const ERROR_SERVICE_DOES_NOT_EXIST: i32 = 1060;
const ERROR_FAILED_SERVICE_CONTROLLER_CONNECT: i32 = 1063;

/// The OS error behind a `windows-service` error, if it is one.
fn os_code(e: &windows_service::Error) -> Option<i32> {
    match e {
        windows_service::Error::Winapi(io) => io.raw_os_error(),
        _ => None,
    }
}

/// The OS's own words for an SCM error (the crate's say only "IO error in winapi call").
fn words(e: &windows_service::Error) -> String {
    match e {
        windows_service::Error::Winapi(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// An error of the SCM in words a user can act on.
fn explain(what: &str, e: windows_service::Error) -> anyhow::Error {
    if os_code(&e) == Some(ERROR_ACCESS_DENIED) {
        anyhow!(
            "{what}: access denied; services are registered by an administrator: \
             open the terminal with \"Run as administrator\" and try again"
        )
    } else {
        anyhow!("{what}: {}", words(&e))
    }
}

fn manager(access: ServiceManagerAccess) -> Result<ServiceManager> {
    ServiceManager::local_computer(None::<&str>, access)
        .map_err(|e| explain("opening the Service Control Manager", e))
}

/// Waits until the service is in `state` (or the time is up).
fn wait_for(
    service: &windows_service::service::Service,
    state: ServiceState,
    limit: Duration,
) -> bool {
    let until = Instant::now() + limit;
    loop {
        match service.query_status() {
            Ok(s) if s.current_state == state => return true,
            Ok(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(200)),
            _ => return false,
        }
    }
}

/// Registers the service (replacing one of the same name: a new command line after
/// backazon.exe moved, other folders) and, with `start`, starts it.
pub fn install(svc: &WindowsService, start: bool, say: &dyn Fn(String)) -> Result<()> {
    let scm = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
    let info = ServiceInfo {
        name: WindowsService::NAME.into(),
        display_name: WindowsService::DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: svc.exe.clone(),
        launch_arguments: svc.args.iter().map(OsString::from).collect(),
        dependencies: vec![],
        // LocalSystem.
        account_name: None,
        account_password: None,
    };
    let access = ServiceAccess::QUERY_STATUS
        | ServiceAccess::START
        | ServiceAccess::STOP
        | ServiceAccess::CHANGE_CONFIG
        | ServiceAccess::QUERY_CONFIG;
    let service = match scm.open_service(WindowsService::NAME, access) {
        Ok(existing) => {
            if existing
                .query_status()
                .is_ok_and(|s| s.current_state != ServiceState::Stopped)
            {
                say(format!(
                    "stopping the running {} service to replace it",
                    WindowsService::NAME
                ));
                let _ = existing.stop();
                wait_for(&existing, ServiceState::Stopped, Duration::from_secs(90));
            }
            existing
                .change_config(&info)
                .map_err(|e| explain("changing the Backazon service", e))?;
            existing
        }
        Err(e) if os_code(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) => scm
            .create_service(&info, access)
            .map_err(|e| explain("registering the Backazon service", e))?,
        Err(e) => return Err(explain("opening the Backazon service", e)),
    };
    service
        .set_description(WindowsService::DESCRIPTION)
        .map_err(|e| explain("describing the Backazon service", e))?;
    // These two only tune it; a service manager without them (Wine's has neither) still
    // runs it at boot, so they are reported, not fatal.
    if let Err(e) = service.set_delayed_auto_start(true) {
        say(format!(
            "note: could not delay its start after boot ({}); it starts with the system",
            words(&e)
        ));
    }
    let restart = ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(WindowsService::RESTART_AFTER_SECS),
    };
    let actions = ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(
            WindowsService::FAILURE_RESET_SECS,
        )),
        reboot_msg: None,
        command: None,
        actions: Some(vec![restart; WindowsService::RESTARTS]),
    };
    if let Err(e) = service
        .update_failure_actions(actions)
        .and_then(|()| service.set_failure_actions_on_non_crash_failures(true))
    {
        say(format!(
            "note: could not ask for restarts after a failure ({})",
            words(&e)
        ));
    }
    if start {
        service
            .start::<&str>(&[])
            .map_err(|e| explain("starting the Backazon service", e))?;
        if !wait_for(&service, ServiceState::Running, Duration::from_secs(30)) {
            bail!(
                "the Backazon service was registered but did not start within 30 s; \
                 its log (backazon.log in the state folder) and the Event Viewer say why"
            );
        }
    }
    Ok(())
}

/// Stops the service if it runs (its jobs stop as on Ctrl-C) and removes it.
pub fn uninstall(say: &dyn Fn(String)) -> Result<()> {
    let scm = manager(ServiceManagerAccess::CONNECT)?;
    let access = ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE;
    let service = match scm.open_service(WindowsService::NAME, access) {
        Ok(s) => s,
        Err(e) if os_code(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) => {
            say(format!(
                "the {} service is not installed",
                WindowsService::NAME
            ));
            return Ok(());
        }
        Err(e) => return Err(explain("opening the Backazon service", e)),
    };
    if service
        .query_status()
        .is_ok_and(|s| s.current_state != ServiceState::Stopped)
    {
        service
            .stop()
            .map_err(|e| explain("stopping the Backazon service", e))?;
        if !wait_for(&service, ServiceState::Stopped, Duration::from_secs(90)) {
            say("it did not stop within 90 s; it is removed once it stops".into());
        }
    }
    service
        .delete()
        .map_err(|e| explain("removing the Backazon service", e))?;
    say(format!(
        "removed the Windows service {}",
        WindowsService::NAME
    ));
    Ok(())
}

/// The registered service: its state and what it runs, how and as whom.
pub fn status() -> Result<Status> {
    let mut st = Status {
        what: format!("Windows service {}", WindowsService::NAME),
        ..Default::default()
    };
    let scm = manager(ServiceManagerAccess::CONNECT)?;
    let service = match scm.open_service(
        WindowsService::NAME,
        ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
    ) {
        Ok(s) => s,
        Err(e) if os_code(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) => return Ok(st),
        Err(e) => return Err(explain("opening the Backazon service", e)),
    };
    let config = service
        .query_config()
        .map_err(|e| explain("reading the Backazon service's settings", e))?;
    let now = service
        .query_status()
        .map_err(|e| explain("reading the Backazon service's state", e))?;
    let state = match now.current_state {
        ServiceState::Running => match now.process_id {
            Some(pid) => format!("running (pid {pid})"),
            None => "running".into(),
        },
        ServiceState::Stopped => "stopped".into(),
        ServiceState::StartPending => "starting".into(),
        ServiceState::StopPending => "stopping".into(),
        other => format!("{other:?}").to_lowercase(),
    };
    st.installed = true;
    st.state = Some(state);
    st.command_line = Some(config.executable_path.display().to_string());
    st.start = Some(
        match config.start_type {
            ServiceStartType::AutoStart => "automatic, at boot",
            ServiceStartType::OnDemand => "manual",
            ServiceStartType::Disabled => "disabled",
            _ => "with the system (a driver's start type)",
        }
        .into(),
    );
    st.account = Some(
        config
            .account_name
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_else(|| "LocalSystem".into()),
    );
    Ok(st)
}

/// What the service runs, set before the dispatcher starts and taken once by its main.
type Main = Box<dyn FnOnce(Receiver<Signal>) -> u8 + Send>;
static MAIN: Mutex<Option<Main>> = Mutex::new(None);
static EXIT: Mutex<u8> = Mutex::new(0);

windows_service::define_windows_service!(ffi_service_main, service_main);

/// `service run`: with the installing user's folders, hands this process to the SCM,
/// which runs `main` (the daemon) on its own thread and asks it to stop through the
/// receiver; `main`'s exit code becomes the service's. Started from a console, says what
/// to run instead.
pub fn run_as_service(
    user: &RunArgs,
    main: impl FnOnce(Receiver<Signal>) -> u8 + Send + 'static,
) -> Result<u8> {
    for (name, value) in [
        ("USERPROFILE", &user.profile),
        ("APPDATA", &user.appdata),
        ("LOCALAPPDATA", &user.local_appdata),
    ] {
        if let Some(v) = value {
            // Before any thread starts: the daemon and the jobs it starts inherit them.
            std::env::set_var(name, v);
        }
    }
    *MAIN.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(main));
    match service_dispatcher::start(WindowsService::NAME, ffi_service_main) {
        Ok(()) => Ok(*EXIT.lock().unwrap_or_else(|p| p.into_inner())),
        Err(e) if os_code(&e) == Some(ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) => bail!(
            "`service run` is started by Windows' service manager \
             (`backazon service install`); to run the jobs in this console: backazon daemon"
        ),
        Err(e) => Err(anyhow!("starting the service dispatcher: {}", words(&e))),
    }
}

/// The service's main, on the SCM's thread: reports Running, runs the daemon until a
/// stop or shutdown control arrives, reports Stopped with the daemon's exit code.
fn service_main(_arguments: Vec<OsString>) {
    let Some(main) = MAIN.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    let (tx, rx) = channel();
    let handle_slot: std::sync::Arc<OnceLock<service_control_handler::ServiceStatusHandle>> =
        Default::default();
    let slot = handle_slot.clone();
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            if let Some(h) = slot.get() {
                let _ = h.set_service_status(reported(ServiceState::StopPending, 0));
            }
            let why = if control == ServiceControl::Stop {
                "service stop"
            } else {
                "Windows shutting down"
            };
            let _ = tx.send(Signal::Stop(why));
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let Ok(handle) = service_control_handler::register(WindowsService::NAME, handler) else {
        return;
    };
    let _ = handle_slot.set(handle);
    let _ = handle.set_service_status(reported(ServiceState::Running, 0));
    let code = main(rx);
    *EXIT.lock().unwrap_or_else(|p| p.into_inner()) = code;
    let _ = handle.set_service_status(reported(ServiceState::Stopped, code));
}

fn reported(state: ServiceState, code: u8) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: if code == 0 {
            ServiceExitCode::NO_ERROR
        } else {
            ServiceExitCode::ServiceSpecific(code.into())
        },
        checkpoint: 0,
        // The daemon ends its runs and writes its log within this.
        wait_hint: if state == ServiceState::StopPending {
            Duration::from_secs(45)
        } else {
            Duration::ZERO
        },
        process_id: None,
    }
}
