//! Wider vectors for plain loops without giving up portable results.
//!
//! The workspace compiles for the x86-64 baseline (SSE2), so auto-vectorised loops use 4-wide
//! vectors even on CPUs with AVX2. [`avx2_fn!`](crate::avx2_fn) defines a function that runs an
//! `#[inline(always)]` body compiled for AVX2 when the CPU has it (checked at run time; std
//! caches the answer) and for the baseline otherwise. FMA is not enabled: `a * b + c` still
//! rounds twice, and AVX2's add, multiply, divide and square root are IEEE-exact like SSE2's, so
//! a loop gives the same bits on either path (the callers' tests compare the two).
//!
//! A closure passed to a `#[target_feature]` function is not reliably inlined into it (measured:
//! the interaction kernels' closures stayed 4-wide), hence a macro over named functions.

/// `avx2_fn!(pub fn name => body, (a: A, b: B) -> R);` defines `name(a, b)`, which calls `body`
/// (an `#[inline(always)]` function with that signature) compiled for AVX2 where the CPU has it.
#[macro_export]
macro_rules! avx2_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident => $body:path, ($($a:ident : $t:ty),* $(,)?) $(-> $r:ty)?) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn wide($($a: $t),*) $(-> $r)? {
                    $body($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { wide($($a),*) };
                }
            }
            $body($($a),*)
        }
    };
}

#[cfg(test)]
mod tests {
    #[inline(always)]
    fn kernel(x: &[f32]) -> Vec<f32> {
        x.iter().map(|&a| 0.9 * a + 0.1 * a * a - 1e-3 * a / ((a * a).sqrt() + 1e-8)).collect()
    }
    crate::avx2_fn!(fn wide_kernel => kernel, (x: &[f32]) -> Vec<f32>);

    /// The AVX2 path and the baseline path give the same bits for the operations the callers
    /// use (add, multiply, divide, square root; no FMA contraction).
    #[test]
    fn same_bits_with_and_without_avx2() {
        let x: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.731).sin() * 3.0).collect();
        let bits = |v: Vec<f32>| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(wide_kernel(&x)), bits(kernel(&x)));
    }
}
