//! The GPU's name and memory in use, from NVIDIA's management library (loaded at run time:
//! libtorch does not expose them, and a machine without the driver has no library).

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};

#[repr(C)]
#[derive(Default)]
struct Memory {
    total: u64,
    free: u64,
    used: u64,
}

type Handle = *mut c_void;

/// What NVML says about GPU `index`: its name and the bytes in use on it.
pub struct GpuInfo {
    pub name: String,
    pub memory_used: u64,
}

/// None when the library, the function or the device is missing.
pub fn gpu_info(index: u32) -> Option<GpuInfo> {
    // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast to the signature
    // NVML documents for it; the name buffer is larger than NVML_DEVICE_NAME_V2_BUFFER_SIZE
    // (96) and NUL-terminated by NVML on success; the library stays loaded.
    unsafe {
        let lib = libc::dlopen(c"libnvidia-ml.so.1".as_ptr(), libc::RTLD_NOW);
        if lib.is_null() {
            return None;
        }
        let sym = |name: &CStr| {
            let p = libc::dlsym(lib, name.as_ptr());
            (!p.is_null()).then_some(p)
        };
        let init: extern "C" fn() -> c_int = std::mem::transmute(sym(c"nvmlInit_v2")?);
        let by_index: extern "C" fn(c_uint, *mut Handle) -> c_int =
            std::mem::transmute(sym(c"nvmlDeviceGetHandleByIndex_v2")?);
        let get_name: extern "C" fn(Handle, *mut c_char, c_uint) -> c_int =
            std::mem::transmute(sym(c"nvmlDeviceGetName")?);
        let get_memory: extern "C" fn(Handle, *mut Memory) -> c_int =
            std::mem::transmute(sym(c"nvmlDeviceGetMemoryInfo")?);
        if init() != 0 {
            return None;
        }
        let mut handle: Handle = std::ptr::null_mut();
        if by_index(index, &mut handle) != 0 {
            return None;
        }
        let mut name = [0 as c_char; 128];
        if get_name(handle, name.as_mut_ptr(), name.len() as c_uint) != 0 {
            return None;
        }
        let mut memory = Memory::default();
        if get_memory(handle, &mut memory) != 0 {
            return None;
        }
        Some(GpuInfo {
            name: CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned(),
            memory_used: memory.used,
        })
    }
}

/// The process's peak resident memory (VmHWM), in bytes.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
