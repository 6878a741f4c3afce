//! Where models run. `MEDGEN_DEVICE` chooses: `auto` (the default: the first CUDA GPU when medgen
//! was built with the `cuda` feature and a GPU is present, the CPU otherwise), `cpu`, or `cuda`
//! / `cuda:N`. Asking for CUDA from a build without the feature is an error that says how to
//! rebuild, rather than a silent fall-back to a CPU run a hundred times slower.
//!
//! The device is not part of any cache key: a stage computed on a GPU is reused on a CPU and the
//! other way round, as Snakemake and DVC treat hardware. Results agree to rounding, not bit for
//! bit.

use candle_core::Device;

/// The environment variable that selects the device.
pub const DEVICE_ENV: &str = "MEDGEN_DEVICE";

/// The device named by [`DEVICE_ENV`].
pub fn select() -> Result<Device, String> {
    let choice = std::env::var(DEVICE_ENV).unwrap_or_default();
    parse(choice.trim())
}

fn parse(choice: &str) -> Result<Device, String> {
    let cuda = |ordinal: usize| {
        if !candle_core::utils::cuda_is_available() {
            return Err(format!(
                "{DEVICE_ENV}={choice} asks for a CUDA GPU, but this medgen was built without CUDA: \
                 rebuild with `cargo build --release --features cuda`, or set {DEVICE_ENV}=cpu"
            ));
        }
        Device::new_cuda(ordinal).map_err(|e| format!("{DEVICE_ENV}={choice}: cannot open CUDA device {ordinal}: {e}"))
    };
    match choice {
        "" | "auto" => Device::cuda_if_available(0).map_err(|e| format!("cannot open CUDA device 0: {e}")),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(ordinal) => cuda(ordinal),
            None => Err(format!("{DEVICE_ENV}={other} is not a device: use auto, cpu, cuda or cuda:N")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert!(parse("cpu").unwrap().is_cpu());
        assert!(parse("auto").is_ok());
        let err = parse("gpu").unwrap_err();
        assert!(err.contains("use auto, cpu, cuda or cuda:N"), "{err}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_rebuild() {
        assert!(parse("").unwrap().is_cpu());
        let err = parse("cuda:1").unwrap_err();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
