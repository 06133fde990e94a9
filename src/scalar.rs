//! The floating-point element type every kernel is generic over.
//!
//! Training runs in `f32`; finite-difference gradient checks run the very same kernels in `f64`,
//! where a central difference is accurate to about 1e-8 and a wrong derivative cannot hide.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

use ndarray::{LinalgScalar, ScalarOperand};
use num_traits::{Float, FromPrimitive};

/// `f32` or `f64`. Sealed: the GEMM module and the safetensors dtypes know exactly these two.
pub trait Scalar:
    Float
    + FromPrimitive
    + LinalgScalar
    + ScalarOperand
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Debug
    + Display
    + Default
    + Send
    + Sync
    + sealed::Sealed
    + 'static
{
    /// The safetensors dtype this type is stored as.
    const DTYPE: safetensors::Dtype;
    /// Bytes per element.
    const BYTES: usize;

    /// Lossy conversion from `f64` (exact for `f64`, rounded to nearest for `f32`).
    fn of(v: f64) -> Self;
    /// Widening conversion to `f64`.
    fn f64(self) -> f64;
    /// Little-endian bytes of `self`, as safetensors stores them.
    fn write_le(self, out: &mut Vec<u8>);
    /// Reads one value from `BYTES` little-endian bytes.
    fn read_le(bytes: &[u8]) -> Self;
    /// tanh: for `f32` the vectorisable [`crate::fastmath::tanh_f32`] (within 4 ULP), for `f64`
    /// the standard library's.
    fn tanh_act(self) -> Self;
    /// σ(x) = 1/(1 + e⁻ˣ), without overflow: [`crate::fastmath::sigmoid_f32`] for `f32`, the
    /// standard library's `exp` for `f64`.
    fn sigmoid_act(self) -> Self;
}

impl Scalar for f32 {
    const DTYPE: safetensors::Dtype = safetensors::Dtype::F32;
    const BYTES: usize = 4;
    #[inline]
    fn of(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn f64(self) -> f64 {
        self as f64
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read_le(bytes: &[u8]) -> Self {
        f32::from_le_bytes(bytes.try_into().expect("4 bytes"))
    }
    #[inline(always)]
    fn tanh_act(self) -> Self {
        crate::fastmath::tanh_f32(self)
    }
    #[inline(always)]
    fn sigmoid_act(self) -> Self {
        crate::fastmath::sigmoid_f32(self)
    }
}

impl Scalar for f64 {
    const DTYPE: safetensors::Dtype = safetensors::Dtype::F64;
    const BYTES: usize = 8;
    #[inline]
    fn of(v: f64) -> Self {
        v
    }
    #[inline]
    fn f64(self) -> f64 {
        self
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read_le(bytes: &[u8]) -> Self {
        f64::from_le_bytes(bytes.try_into().expect("8 bytes"))
    }
    #[inline]
    fn tanh_act(self) -> Self {
        self.tanh()
    }
    #[inline]
    fn sigmoid_act(self) -> Self {
        if self >= 0.0 {
            1.0 / (1.0 + (-self).exp())
        } else {
            let e = self.exp();
            e / (1.0 + e)
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}
