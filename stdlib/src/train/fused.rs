//! `torch.lerp` and `torch.addcmul` with scalar coefficients, rounded as torch's CPU kernels round
//! them: for AdamW's moments and the EMA.
//!
//! torch's CPU kernels use a fused multiply-add (one rounding) where the formula has a product
//! followed by a sum: `lerp_vec` in `aten/src/ATen/native/cpu/LerpKernel.cpp` computes
//! `fma(end - start, weight, start)` for |weight| < 0.5 and `fma(end - start, weight - 1, end)`
//! otherwise, and `addcmul` (`self + value * t1 * t2`) is compiled to `fma(value * t1, t2, self)`
//! — both established element by element against torch 2.15 with exact rational arithmetic.
//! Candle has no fused multiply-add; the same formulas in separate Candle operations round twice
//! and differ from torch by one unit in the last place in a few percent of the elements, after
//! which an AdamW trajectory is no longer torch's. On CPU, f32 and f64 tensors therefore go through
//! small custom operations that call `mul_add` (a single rounding, in hardware where the CPU has
//! FMA). Other dtypes and devices use separate operations; torch's CUDA kernels are fused by
//! nvcc's contraction, so there the results agree to about one ulp per update.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};

/// `lerp(start, end, weight)` as torch computes it (see the module docs).
pub fn lerp(start: &Tensor, end: &Tensor, weight: f64) -> Result<Tensor> {
    check_shapes(&[start, end])?;
    if fusable(start) {
        return start.contiguous()?.apply_op2_no_bwd(&end.contiguous()?, &Lerp { weight });
    }
    let weight = rounded(weight, start.dtype());
    let diff = (end - start)?;
    if weight.abs() < 0.5 {
        start + (diff * weight)?
    } else {
        end + (diff * (weight - 1.0))?
    }
}

/// `base + value * t1 * t2` as torch's `addcmul` computes it: `fma(value * t1, t2, base)`.
pub fn addcmul(base: &Tensor, t1: &Tensor, t2: &Tensor, value: f64) -> Result<Tensor> {
    check_shapes(&[base, t1, t2])?;
    let scaled = (t1 * value)?;
    if fusable(base) {
        return base.contiguous()?.apply_op3_no_bwd(&scaled.contiguous()?, &t2.contiguous()?, &Addcmul);
    }
    base + (scaled * t2)?
}

fn check_shapes(tensors: &[&Tensor]) -> Result<()> {
    if tensors.iter().any(|t| t.shape() != tensors[0].shape() || t.dtype() != tensors[0].dtype()) {
        let shapes: Vec<_> = tensors.iter().map(|t| (t.dims().to_vec(), t.dtype())).collect();
        candle_core::bail!("fused operation on tensors of different shapes or dtypes: {shapes:?}");
    }
    Ok(())
}

/// Whether the custom CPU kernels apply.
fn fusable(tensor: &Tensor) -> bool {
    matches!(tensor.device(), Device::Cpu) && matches!(tensor.dtype(), DType::F32 | DType::F64)
}

/// `value` rounded to the precision torch computes `dtype` in (f64 for f64, f32 otherwise).
fn rounded(value: f64, dtype: DType) -> f64 {
    if dtype == DType::F64 {
        value
    } else {
        f64::from(value as f32)
    }
}

/// The contiguous values of a CPU tensor.
fn values<'a, T: candle_core::WithDType>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("fused operations need contiguous tensors");
    };
    Ok(&storage.as_slice::<T>()?[start..end])
}

struct Lerp {
    weight: f64,
}

impl CustomOp2 for Lerp {
    fn name(&self) -> &'static str {
        "fused-lerp"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let storage = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let weight = self.weight as f32;
                let (start, end) = (values::<f32>(s1, l1)?, values::<f32>(s2, l2)?);
                CpuStorage::F32(if weight.abs() < 0.5 {
                    start.iter().zip(end).map(|(&s, &e)| (e - s).mul_add(weight, s)).collect()
                } else {
                    start.iter().zip(end).map(|(&s, &e)| (e - s).mul_add(weight - 1.0, e)).collect()
                })
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let weight = self.weight;
                let (start, end) = (values::<f64>(s1, l1)?, values::<f64>(s2, l2)?);
                CpuStorage::F64(if weight.abs() < 0.5 {
                    start.iter().zip(end).map(|(&s, &e)| (e - s).mul_add(weight, s)).collect()
                } else {
                    start.iter().zip(end).map(|(&s, &e)| (e - s).mul_add(weight - 1.0, e)).collect()
                })
            }
            _ => candle_core::bail!("fused lerp needs two f32 or two f64 tensors"),
        };
        Ok((storage, l1.shape().clone()))
    }
}

/// `fma(scaled, t2, base)` element by element, `scaled` being `value * t1` already rounded.
struct Addcmul;

impl CustomOp3 for Addcmul {
    fn name(&self) -> &'static str {
        "fused-addcmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let storage = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let (base, a, b) = (values::<f32>(s1, l1)?, values::<f32>(s2, l2)?, values::<f32>(s3, l3)?);
                CpuStorage::F32(base.iter().zip(a).zip(b).map(|((&c, &a), &b)| a.mul_add(b, c)).collect())
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let (base, a, b) = (values::<f64>(s1, l1)?, values::<f64>(s2, l2)?, values::<f64>(s3, l3)?);
                CpuStorage::F64(base.iter().zip(a).zip(b).map(|((&c, &a), &b)| a.mul_add(b, c)).collect())
            }
            _ => candle_core::bail!("fused addcmul needs three f32 or three f64 tensors"),
        };
        Ok((storage, l1.shape().clone()))
    }
}
