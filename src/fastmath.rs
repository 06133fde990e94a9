//! `exp`, `tanh` and the logistic sigmoid for `f32`, written so the compiler can vectorise the
//! loops that call them (no libm calls, no data-dependent branches), within a few ULP of the
//! correctly rounded result. The `f64` kernels used by gradient checks keep the standard library's
//! functions.
//!
//! * `exp(x) = 2ⁿ · e^r` with `n = round(x / ln 2)`, `r = x − n·ln 2` split in two parts
//!   (Cody–Waite), `|r| ≤ ln2/2`, and `e^r` by its Taylor polynomial of degree 7
//!   (truncation error below 6e-9 relative).
//! * `tanh(x)`: for `|x| < 0.3` the odd Taylor series to `x¹¹`; beyond, `(1 − e)/(1 + e)` with
//!   `e = exp(−2|x|)`; the sign restored at the end.
//! * `σ(x) = 1 / (1 + exp(−x))`, and 0 where `exp(−x)` would overflow.

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n · LN2_HI` is exact for |n| < 2⁹.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Adding and subtracting 1.5·2²³ rounds an `f32` below 2²² to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// eˣ for `f32`, clamped to the finite range: exp(x ≥ 88.37) = 2.4e38, exp(x ≤ −87.3) = 1.2e−38.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.37);
    // `shifted` holds round(x / ln 2) in its low mantissa bits; reading them as an integer
    // avoids a float-to-int conversion, which would keep the loop from vectorising.
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits()); // n as a two's-complement u32
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    p * scale
}

/// tanh(x) for `f32`.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    // Small |x|: tanh a = a − a³/3 + 2a⁵/15 − 17a⁷/315 + 62a⁹/2835 − 1382a¹¹/155925.
    let a2 = a * a;
    let series = a
        * (1.0
            + a2 * (-1.0 / 3.0
                + a2 * (2.0 / 15.0
                    + a2 * (-17.0 / 315.0 + a2 * (62.0 / 2835.0 + a2 * (-1382.0 / 155_925.0))))));
    let e = exp_f32(-2.0 * a);
    let large = (1.0 - e) / (1.0 + e);
    let t = if a < 0.3 { series } else { large };
    t.copysign(x)
}

/// σ(x) = 1 / (1 + e⁻ˣ) for `f32`; exactly 0 below −88.37, where e⁻ˣ leaves the `f32` range
/// (the true value is below 4e−39 there).
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    let s = 1.0 / (1.0 + exp_f32(-x));
    if x < -88.37 { 0.0 } else { s }
}

/// Runs `f` compiled for AVX-512 (16 lanes) or AVX2 (8 lanes) when the CPU has them, and as it
/// is otherwise.
///
/// The default build targets plain x86-64 (SSE2), where the loops of the gate math and of the
/// elementwise layers vectorise only 4 lanes wide, and the branch-free `exp`/`tanh` above not
/// at all. Inlined into this function, the same source code is compiled again for the wider
/// instruction sets and chosen at run time. The results are the same bit for bit on either path: the operations
/// are the same IEEE ones in the same order (Rust never contracts `a·b + c` into an FMA on its
/// own), only more of them at once.
///
/// `f` should be a closure over `#[inline]` code; what it calls out of line runs as compiled
/// for the baseline.
#[inline(always)]
pub fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
        fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the CPU has just been found to support these features (and with them
            // AVX2 and FMA).
            return unsafe { with_avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has just been found to support both features.
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between an f32 and the f64 truth rounded to f32.
    fn ulps(got: f32, truth: f64) -> u32 {
        let want = truth as f32;
        if got == want {
            return 0;
        }
        (got.to_bits() as i64 - want.to_bits() as i64).unsigned_abs() as u32
    }

    fn sweep(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f32 / n as f32)
    }

    #[test]
    fn exp_is_within_two_ulp_over_its_range() {
        let worst = sweep(-87.0, 88.0, 200_000)
            .map(|x| ulps(exp_f32(x), (x as f64).exp()))
            .max()
            .unwrap();
        assert!(worst <= 2, "worst exp error {worst} ulp");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(1000.0).is_finite() && exp_f32(-1000.0) > 0.0);
    }

    #[test]
    fn tanh_and_sigmoid_are_within_a_few_ulp() {
        let mut worst_t = 0;
        let mut worst_s = 0;
        for x in sweep(-20.0, 20.0, 400_000).chain(sweep(-0.01, 0.01, 10_000)) {
            worst_t = worst_t.max(ulps(tanh_f32(x), (x as f64).tanh()));
            worst_s = worst_s.max(ulps(sigmoid_f32(x), 1.0 / (1.0 + (-(x as f64)).exp())));
        }
        assert!(worst_t <= 4, "worst tanh error {worst_t} ulp");
        assert!(worst_s <= 4, "worst sigmoid error {worst_s} ulp");
        assert_eq!(tanh_f32(0.0), 0.0);
        assert_eq!(tanh_f32(50.0), 1.0);
        assert_eq!(tanh_f32(-50.0), -1.0);
        assert_eq!(sigmoid_f32(1e4), 1.0);
        assert_eq!(sigmoid_f32(-1e4), 0.0);
    }
}
