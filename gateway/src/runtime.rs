//! The one place that knows how compio builds a runtime. compio is pinned to an exact
//! version because its minor releases change this API; everything else goes through here.

use std::io;

use compio::driver::{DriverType, ProactorBuilder};
use compio::runtime::{Runtime, RuntimeBuilder};

use crate::config::IoDriver;

/// Builds a worker's runtime for the configured driver.
///
/// `Auto` lets compio's fusion driver try io_uring and fall back to the polling (epoll)
/// driver when io_uring cannot be set up: seccomp denying `io_uring_setup`,
/// `kernel.io_uring_disabled`, or too little locked memory. `IoUring` fails instead of
/// falling back; `Epoll` never tries io_uring.
pub fn build(driver: IoDriver, cpu: Option<usize>) -> io::Result<Runtime> {
    let mut proactor = ProactorBuilder::new();
    match driver {
        IoDriver::Auto => {}
        IoDriver::IoUring => {
            proactor.driver_type(DriverType::IoUring);
        }
        IoDriver::Epoll => {
            proactor.driver_type(DriverType::Poll);
        }
    }
    let mut builder = RuntimeBuilder::new();
    builder.with_proactor(proactor);
    if let Some(cpu) = cpu {
        builder.thread_affinity([cpu].into_iter().collect());
    }
    builder.build()
}

/// The name of the driver a runtime ended up with, as logged and exported.
pub fn driver_name(runtime: &Runtime) -> &'static str {
    match runtime.driver_type() {
        DriverType::IoUring => "io_uring",
        DriverType::Poll => "epoll",
        DriverType::IOCP => "iocp",
    }
}
