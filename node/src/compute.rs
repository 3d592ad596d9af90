//! Where a node computes and in what precision: `--device cuda|cpu|auto` and
//! `--precision fp32|bf16|auto` resolve to a [`Compute`].

use tch::{Device, Kind};
use templar_protocol::node_status::ComputeReport;

/// CUDA when libtorch sees a GPU, else CPU. `TEMPLAR_DEVICE=cpu` forces the CPU.
pub fn default_device() -> Device {
    match std::env::var("TEMPLAR_DEVICE").as_deref() {
        Ok("cpu") => Device::Cpu,
        _ => {
            load_torch_cuda();
            Device::cuda_if_available()
        }
    }
}

/// The linker drops `libtorch_cuda.so` (no symbol of it is referenced: its kernels register
/// themselves when it loads), and without it libtorch reports no GPU. Load it by name from
/// the library path when it is there; a CPU-only libtorch has none and stays on the CPU.
fn load_torch_cuda() {
    static LOADED: std::sync::Once = std::sync::Once::new();
    LOADED.call_once(|| {
        // SAFETY: dlopen with a valid NUL-terminated name; the handle is kept for the life
        // of the process on purpose.
        let handle = unsafe {
            libc::dlopen(
                c"libtorch_cuda.so".as_ptr(),
                libc::RTLD_NOW | libc::RTLD_GLOBAL,
            )
        };
        if handle.is_null() {
            tracing::debug!("no libtorch_cuda.so on the library path: CPU only");
        }
    });
}

/// The precision of the forward and backward matmuls and attention. Parameters, optimizer
/// state, norms, the residual stream and the loss stay f32 either way (bf16 compute with
/// f32 master weights: what autocast does, spelled out so that it runs on any device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}

impl Precision {
    pub fn kind(self) -> Kind {
        match self {
            Precision::Fp32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        }
    }
}

/// `--device`: auto is CUDA when libtorch sees a GPU, else the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cuda,
    Cpu,
}

/// `--precision`: auto is bf16 on a GPU and f32 on the CPU (where bf16 matmuls are slower).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PrecisionChoice {
    #[default]
    Auto,
    Fp32,
    Bf16,
}

#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error("--device cuda: libtorch sees no CUDA device: {0}")]
    NoCuda(String),
}

/// Device and precision of a node's model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Compute {
    pub device: Device,
    pub precision: Precision,
}

impl From<Device> for Compute {
    /// f32 on `device` (tests and tools that do not choose).
    fn from(device: Device) -> Self {
        Self {
            device,
            precision: Precision::Fp32,
        }
    }
}

impl Compute {
    pub fn resolve(device: DeviceChoice, precision: PrecisionChoice) -> Result<Self, ComputeError> {
        let device = match device {
            DeviceChoice::Cpu => Device::Cpu,
            DeviceChoice::Auto => default_device(),
            DeviceChoice::Cuda => {
                load_torch_cuda();
                if !tch::Cuda::is_available() {
                    let reason = crate::cuda_info::probe(0).unusable_reason().unwrap_or_else(
                        || {
                            "the driver is there; is libtorch_cuda.so on LD_LIBRARY_PATH, and a \
                         GPU visible to this process (CUDA_VISIBLE_DEVICES)?"
                                .into()
                        },
                    );
                    return Err(ComputeError::NoCuda(reason));
                }
                Device::Cuda(0)
            }
        };
        let precision = match (precision, device) {
            (PrecisionChoice::Fp32, _) => Precision::Fp32,
            (PrecisionChoice::Bf16, _) => Precision::Bf16,
            (PrecisionChoice::Auto, Device::Cpu) => Precision::Fp32,
            (PrecisionChoice::Auto, _) => Precision::Bf16,
        };
        Ok(Self { device, precision })
    }

    /// What the node reports in `/status`: the device and precision, and on a GPU what the
    /// CUDA driver says of it.
    pub fn report(&self) -> ComputeReport {
        let precision = match self.precision {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        };
        let mut report = ComputeReport {
            device: match self.device {
                Device::Cuda(i) => format!("cuda:{i}"),
                Device::Mps => "mps".into(),
                Device::Vulkan => "vulkan".into(),
                Device::Cpu => "cpu".into(),
            },
            precision: precision.into(),
            ..Default::default()
        };
        if let Device::Cuda(i) = self.device {
            let info = crate::cuda_info::probe(i as i32);
            report.gpu = info.gpu_name;
            report.gpu_memory_bytes = info.gpu_memory_bytes;
            report.cuda_driver = info.driver.map(|v| v.to_string());
            report.cuda_runtime = info.runtime.map(|v| v.to_string());
        }
        report
    }
}

/// `--device` and `--precision`, for the subcommands that run the model or the codec.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ComputeArgs {
    /// Where the model runs: auto (CUDA when libtorch sees a GPU), cuda or cpu.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Matmul and attention precision: auto (bf16 on a GPU, f32 on the CPU), fp32 or bf16.
    #[arg(long, value_enum, default_value = "auto")]
    pub precision: PrecisionChoice,
}

impl ComputeArgs {
    pub fn resolve(self) -> Result<Compute, ComputeError> {
        Compute::resolve(self.device, self.precision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_precision_is_bf16_on_a_gpu_only_and_an_explicit_one_wins() {
        let cpu = |p| Compute::resolve(DeviceChoice::Cpu, p).unwrap();
        assert_eq!(cpu(PrecisionChoice::Auto).precision, Precision::Fp32);
        assert_eq!(cpu(PrecisionChoice::Bf16).precision, Precision::Bf16);
        assert_eq!(cpu(PrecisionChoice::Auto).device, Device::Cpu);
        match Compute::resolve(DeviceChoice::Cuda, PrecisionChoice::Auto) {
            Ok(c) => assert_eq!((c.device, c.precision), (Device::Cuda(0), Precision::Bf16)),
            Err(e) => assert!(e.to_string().contains("no CUDA device"), "{e}"),
        }
        assert_eq!(Precision::Bf16.kind(), Kind::BFloat16);
    }
}
