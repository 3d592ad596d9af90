//! What the CUDA driver and runtime say about the machine, read through their C APIs
//! (`libcuda.so.1`, mounted into a container by the NVIDIA container toolkit, and the
//! `libcudart` libtorch was built with), loaded at run time so that a CPU-only machine has
//! neither and the node still starts.

use std::ffi::{CStr, c_char, c_int, c_void};

/// A CUDA version as the APIs give it (`13000` is 13.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CudaVersion(pub i32);

impl std::fmt::Display for CudaVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0 / 1000, (self.0 % 1000) / 10)
    }
}

/// What could be read; `None` where a library or a call was missing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CudaInfo {
    /// The newest CUDA version the installed driver supports.
    pub driver: Option<CudaVersion>,
    /// The CUDA runtime this build loads.
    pub runtime: Option<CudaVersion>,
    pub gpu_name: Option<String>,
    pub gpu_memory_bytes: Option<u64>,
}

impl CudaInfo {
    /// Why CUDA cannot run, when the versions tell: no driver, or one older than the
    /// runtime needs.
    pub fn unusable_reason(&self) -> Option<String> {
        match (self.driver, self.runtime) {
            (None, _) => Some(
                "no NVIDIA driver visible (libcuda.so.1 not found: on Kubernetes the NVIDIA \
                 device plugin and container toolkit provide it to pods that request \
                 nvidia.com/gpu)"
                    .into(),
            ),
            (Some(d), Some(r)) if d < r => Some(format!(
                "the NVIDIA driver supports CUDA up to {d}, and this build needs the CUDA {r} \
                 runtime: update the node's driver (CUDA 13 needs R580 or newer)"
            )),
            _ => None,
        }
    }
}

/// A library opened for the life of the process.
struct Library(*mut c_void);

impl Library {
    fn open(names: &[&CStr]) -> Option<Self> {
        names.iter().find_map(|name| {
            // SAFETY: dlopen with a NUL-terminated name; the handle is never closed.
            let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            (!handle.is_null()).then_some(Self(handle))
        })
    }

    /// The symbol `name`, as a function pointer of type `F`.
    ///
    /// # Safety
    /// `F` must be the symbol's C signature as a `extern "C" fn` pointer type.
    unsafe fn symbol<F: Copy>(&self, name: &CStr) -> Option<F> {
        // SAFETY: a handle from dlopen and a NUL-terminated name.
        let ptr = unsafe { libc::dlsym(self.0, name.as_ptr()) };
        if ptr.is_null() {
            return None;
        }
        assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
        // SAFETY: the caller names the symbol's signature; sizes checked above.
        Some(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&ptr) })
    }
}

type GetVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
type Init = unsafe extern "C" fn(u32) -> c_int;
type DeviceGet = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
type DeviceGetName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
type DeviceTotalMem = unsafe extern "C" fn(*mut usize, c_int) -> c_int;

/// Read the driver's and runtime's versions and GPU `ordinal`'s name and memory.
pub fn probe(ordinal: i32) -> CudaInfo {
    let mut info = CudaInfo::default();
    if let Some(rt) = Library::open(&[c"libcudart.so.13", c"libcudart.so.12", c"libcudart.so"]) {
        // SAFETY: cudaRuntimeGetVersion(int*) -> cudaError_t.
        if let Some(get) = unsafe { rt.symbol::<GetVersion>(c"cudaRuntimeGetVersion") } {
            let mut v = 0;
            // SAFETY: a valid out pointer.
            if unsafe { get(&mut v) } == 0 && v > 0 {
                info.runtime = Some(CudaVersion(v));
            }
        }
    }
    let Some(cuda) = Library::open(&[c"libcuda.so.1", c"libcuda.so"]) else {
        return info;
    };
    // SAFETY: the driver API's documented signatures (cuda.h).
    let (init, version, device_get, name, memory) = unsafe {
        (
            cuda.symbol::<Init>(c"cuInit"),
            cuda.symbol::<GetVersion>(c"cuDriverGetVersion"),
            cuda.symbol::<DeviceGet>(c"cuDeviceGet"),
            cuda.symbol::<DeviceGetName>(c"cuDeviceGetName"),
            cuda.symbol::<DeviceTotalMem>(c"cuDeviceTotalMem_v2"),
        )
    };
    if let Some(version) = version {
        let mut v = 0;
        // SAFETY: a valid out pointer; callable before cuInit.
        if unsafe { version(&mut v) } == 0 && v > 0 {
            info.driver = Some(CudaVersion(v));
        }
    }
    let (Some(init), Some(device_get)) = (init, device_get) else {
        return info;
    };
    let mut device = 0;
    // SAFETY: valid out pointers; a failed call leaves the fields unset.
    if unsafe { init(0) } != 0 || unsafe { device_get(&mut device, ordinal) } != 0 {
        return info;
    }
    if let Some(name) = name {
        let mut buf = [0 as c_char; 256];
        // SAFETY: the buffer's length is passed; the driver NUL-terminates it.
        if unsafe { name(buf.as_mut_ptr(), buf.len() as c_int, device) } == 0 {
            // SAFETY: NUL-terminated within the buffer.
            let text = unsafe { CStr::from_ptr(buf.as_ptr()) };
            info.gpu_name = Some(text.to_string_lossy().into_owned());
        }
    }
    if let Some(memory) = memory {
        let mut bytes = 0usize;
        // SAFETY: a valid out pointer.
        if unsafe { memory(&mut bytes, device) } == 0 {
            info.gpu_memory_bytes = Some(bytes as u64);
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_as_cuda_spells_them_and_an_old_driver_is_named() {
        assert_eq!(CudaVersion(13000).to_string(), "13.0");
        assert_eq!(CudaVersion(12080).to_string(), "12.8");
        let old = CudaInfo {
            driver: Some(CudaVersion(12080)),
            runtime: Some(CudaVersion(13000)),
            ..Default::default()
        };
        let reason = old.unusable_reason().unwrap();
        assert!(
            reason.contains("up to 12.8") && reason.contains("13.0") && reason.contains("R580"),
            "{reason}"
        );
        let current = CudaInfo {
            driver: Some(CudaVersion(13010)),
            ..old.clone()
        };
        assert_eq!(current.unusable_reason(), None);
        let none = CudaInfo::default();
        assert!(none.unusable_reason().unwrap().contains("libcuda.so.1"));
    }

    #[test]
    fn probing_a_machine_without_a_gpu_neither_fails_nor_invents_one() {
        // On a machine with no driver the probe finds none; with one, a name comes with it.
        let info = probe(0);
        if info.driver.is_none() {
            assert_eq!(info.gpu_name, None);
            assert!(info.unusable_reason().is_some());
        }
    }
}
