//! Which device the models run on: `cpu`, `cuda:N` or `auto` (CUDA when this
//! build has it and the machine has a working NVIDIA driver, else CPU).
//! burn's CUDA backend panics at first use without the driver, so the
//! choice is probed and checked here, before any model touches it.

use std::fmt;

/// A device the models can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// What an operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    Auto,
    Exactly(Device),
}

/// Parses `cpu`, `auto`, `cuda` (= `cuda:0`) or `cuda:N`.
pub fn parse(s: &str) -> Result<Requested, String> {
    let s = s.trim().to_ascii_lowercase();
    match s.as_str() {
        "auto" => Ok(Requested::Auto),
        "cpu" => Ok(Requested::Exactly(Device::Cpu)),
        "cuda" => Ok(Requested::Exactly(Device::Cuda(0))),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(Requested::Exactly(Device::Cuda(n))),
            _ => Err(format!(
                "device {s:?} is not one of cpu, auto, cuda or cuda:N (N = 0, 1, …)"
            )),
        },
    }
}

/// NVIDIA GPUs whose device nodes exist (`/dev/nvidia0`, `/dev/nvidia1`, …).
pub fn cuda_devices() -> usize {
    if !std::path::Path::new("/dev/nvidiactl").exists() {
        return 0;
    }
    (0..64)
        .take_while(|n| std::path::Path::new(&format!("/dev/nvidia{n}")).exists())
        .count()
}

/// Whether the CUDA driver library loads.
pub fn cuda_library_loads() -> bool {
    // SAFETY: dlopen with a constant NUL-terminated name; the handle is
    // closed at once and nothing from the library is called.
    unsafe {
        let handle = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if handle.is_null() {
            return false;
        }
        libc::dlclose(handle);
    }
    true
}

/// Whether this build includes the CUDA backend (feature `cuda`).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// Resolves a request to a device that works here, with a reason for the
/// choice (for the startup log), or says why the request cannot be served.
pub fn resolve(requested: Requested) -> Result<(Device, String), String> {
    resolve_with(requested, CUDA_BUILT, cuda_devices(), cuda_library_loads())
}

fn resolve_with(
    requested: Requested,
    built: bool,
    gpus: usize,
    driver: bool,
) -> Result<(Device, String), String> {
    match requested {
        Requested::Exactly(Device::Cpu) => Ok((Device::Cpu, "asked for".into())),
        Requested::Auto => Ok(if !built {
            (Device::Cpu, "auto: this build has no CUDA backend".into())
        } else if gpus == 0 {
            (Device::Cpu, "auto: no NVIDIA GPU found".into())
        } else if !driver {
            (
                Device::Cpu,
                "auto: the NVIDIA driver library (libcuda.so.1) does not load".into(),
            )
        } else {
            (Device::Cuda(0), format!("auto: {gpus} NVIDIA GPU(s) found"))
        }),
        Requested::Exactly(Device::Cuda(n)) => {
            if !built {
                Err(format!(
                    "device cuda:{n} was asked for, but this huashen was built without CUDA \
                     support: rebuild with `cargo build --release -p huashen --features cuda`, \
                     or use --device cpu (or auto)"
                ))
            } else if gpus == 0 || !driver {
                Err(format!(
                    "device cuda:{n} was asked for, but this machine has no working NVIDIA \
                     driver ({}): install the driver, or use --device cpu (or auto)",
                    if gpus == 0 {
                        "no /dev/nvidia* device"
                    } else {
                        "libcuda.so.1 does not load"
                    }
                ))
            } else if n >= gpus {
                Err(format!(
                    "device cuda:{n} does not exist: this machine has {gpus} NVIDIA GPU(s) \
                     (cuda:0 … cuda:{})",
                    gpus - 1
                ))
            } else {
                Ok((Device::Cuda(n), "asked for".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse("auto"), Ok(Requested::Auto));
        assert_eq!(parse(" CPU "), Ok(Requested::Exactly(Device::Cpu)));
        assert_eq!(parse("cuda"), Ok(Requested::Exactly(Device::Cuda(0))));
        assert_eq!(parse("cuda:3"), Ok(Requested::Exactly(Device::Cuda(3))));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            assert!(parse(bad).unwrap_err().contains("cpu, auto, cuda"), "{bad}");
        }
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn auto_falls_back_to_cpu_and_cuda_requests_fail_clearly() {
        let auto = |built, gpus, driver| resolve_with(Requested::Auto, built, gpus, driver);
        assert_eq!(auto(false, 1, true).unwrap().0, Device::Cpu);
        assert_eq!(auto(true, 0, false).unwrap().0, Device::Cpu);
        assert_eq!(auto(true, 2, false).unwrap().0, Device::Cpu);
        assert_eq!(auto(true, 2, true).unwrap().0, Device::Cuda(0));
        let cuda = |n, built, gpus, driver| {
            resolve_with(Requested::Exactly(Device::Cuda(n)), built, gpus, driver)
        };
        assert!(
            cuda(0, false, 1, true)
                .unwrap_err()
                .contains("--features cuda")
        );
        assert!(
            cuda(0, true, 0, false)
                .unwrap_err()
                .contains("no /dev/nvidia")
        );
        assert!(
            cuda(0, true, 1, false)
                .unwrap_err()
                .contains("libcuda.so.1")
        );
        assert!(
            cuda(2, true, 2, true)
                .unwrap_err()
                .contains("cuda:0 … cuda:1")
        );
        assert_eq!(cuda(1, true, 2, true).unwrap().0, Device::Cuda(1));
    }

    #[test]
    fn this_machine_resolves_auto() {
        // Whatever the machine: auto always yields a device, never a panic.
        let (d, why) = resolve(Requested::Auto).unwrap();
        assert!(d == Device::Cpu || CUDA_BUILT, "{d} {why}");
    }
}
