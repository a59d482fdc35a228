//! The few system calls the pool needs that std does not offer: prctl, setrlimit, kill,
//! dup/dup2, and signal names. Every `unsafe` block of the crate is here.
#![allow(unsafe_code)] // Each block below says why it is sound.

use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Sets up a worker's process between fork and exec: it dies with the thread that
/// started it (`PR_SET_PDEATHSIG`), exits at once if that already happened, and gets an
/// address-space limit when `memory_limit` is set.
pub(crate) fn configure_worker(cmd: &mut Command, memory_limit: Option<u64>) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed. It calls prctl, getppid, setrlimit and
    // _exit, which are, and it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl: then nobody would send the signal.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            if let Some(bytes) = memory_limit {
                let limit = libc::rlimit {
                    rlim_cur: bytes as libc::rlim_t,
                    rlim_max: bytes as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Sends SIGKILL to `pid`. Callers guarantee the process has not been reaped yet (so the
/// pid cannot belong to anyone else).
pub(crate) fn kill(pid: u32) {
    // SAFETY: kill has no memory-safety preconditions; a stale pid is excluded by the
    // caller, and an error (the process already gone) is harmless and ignored.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// In a worker: takes the process's stdout for protocol frames and points fd 1 at
/// stderr, so whatever task code prints cannot corrupt the frames.
pub(crate) fn take_stdout_for_frames() -> io::Result<File> {
    // SAFETY: dup and dup2 act on file descriptors only. fd 1 and 2 are open in a worker
    // (the pool gave it pipes). The duplicate is a fresh descriptor nobody else owns, so
    // the File may own and close it.
    unsafe {
        let fd = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::dup2(2, 1) < 0 {
            let e = io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(File::from_raw_fd(fd))
    }
}

/// The name of signal `sig`, e.g. `"SIGSEGV"`.
pub(crate) fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => "an unnamed signal",
    }
}
