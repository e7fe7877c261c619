//! The epoll fallback, for real: the gateway binary runs in a child process whose seccomp
//! filter makes io_uring_setup fail with EPERM, as a hardened container would.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{TestClient, wait_listening};

const SYS_IO_URING_SETUP: u32 = 425;

/// Installs a seccomp filter denying io_uring_setup with EPERM; everything else is allowed.
fn deny_io_uring(command: &mut Command) {
    let install = || -> std::io::Result<()> {
        let filter = [
            // Load the syscall number (offset 0 of seccomp_data).
            libc::sock_filter { code: 0x20, jt: 0, jf: 0, k: 0 },
            // if nr == io_uring_setup fall through to ERRNO, else skip to ALLOW.
            libc::sock_filter { code: 0x15, jt: 0, jf: 1, k: SYS_IO_URING_SETUP },
            libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: 0x0005_0000 | libc::EPERM as u32 },
            libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: 0x7fff_0000 },
        ];
        let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut _ };
        // SAFETY: prctl with these arguments only changes this (child) process's privileges
        // and reads `program`, which outlives the call.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program as *const libc::sock_fprog) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure calls only prctl, which is async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(install);
    }
}

fn gateway_command(driver: &str) -> (Command, support::tempdir::Dir) {
    let dir = support::tempdir::Dir::new();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        format!(
            "[listen]\ntcp = \"127.0.0.1:0\"\n[io]\ndriver = \"{driver}\"\nworkers = 2\n[auth]\nmode = \"token\"\n[auth.keys]\n{} = \"{}\"\n",
            support::KID,
            std::str::from_utf8(support::SECRET).unwrap()
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringgate"));
    command.args(["run", "--config"]).arg(&path).stdout(Stdio::null()).stderr(Stdio::piped());
    command.env("RINGGATE_LOG", "info").env("NO_COLOR", "1");
    deny_io_uring(&mut command);
    (command, dir)
}

#[test]
fn auto_falls_back_to_epoll_when_io_uring_is_denied() {
    let (mut command, _dir) = gateway_command("auto");
    let mut child = command.spawn().unwrap();
    let Some((addr, driver)) = wait_listening(&mut child) else {
        let _ = child.kill();
        panic!("gateway did not start: {:?}", child.wait_with_output());
    };
    assert_eq!(driver, "epoll");
    let (mut client, _) = TestClient::login(addr.parse().unwrap(), "alice", "phone");
    client.echo(b"served on the fallback driver");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn forced_io_uring_fails_loudly_when_denied() {
    let (mut command, _dir) = gateway_command("io_uring");
    command.stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "gateway kept running without io_uring");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(log.contains("ringgate:"), "no error message: {log}");
}
