//! Row-wise post-training quantization of any method's final tables, composable with every
//! method (`quantize: int8 | int4` on a method entry of the YAML).
//!
//! Layout: FBGEMM's `IntNBitTableBatchedEmbeddingBagsCodegen` (its default
//! `scale_bias_size_in_bytes = 4`): each row of `w` values is stored as `w` unsigned codes of
//! `bits` bits, packed and rounded up to whole bytes, plus an fp16 scale and an fp16 bias. A
//! value is `bias + code * scale`, with `bias` the row's minimum and `scale = (max - bias) /
//! (2^bits - 1)`, both rounded to fp16 first; codes are rounded to nearest and clamped. No row
//! alignment padding is counted (FBGEMM pads rows to 16 bytes on GPUs; state it if you compare).
//!
//! What a row is: the method's own table rows ([`EmbeddingMethod::row_widths`]): full vectors
//! for dense and hashing, sub-vectors for CE and CQR, codewords for PQ/RQ, matrix rows for
//! DHE's layers and TT-Rec's cores, blocks of `dim` values for flat arrays (ROBE, HashedNets).
//!
//! [`Quantized`] wraps a method: training is untouched (f32 throughout, the same numbers as the
//! method alone); at `on_train_end`, after the method's own (PQ/RQ compress there), every
//! trainable parameter is replaced by its dequantized value, so the model is scored as served,
//! and [`Accounting::quantized_param_bytes`] counts the stored codes and scales. Serving bytes
//! only: training memory is the method's (f32 rows and optimizer state).

use serde::{Deserialize, Serialize};

use crate::{Accounting, EmbeddingMethod, HookReport, MethodError};

/// The integer width of a quantized row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantize {
    Int8,
    Int4,
}

impl Quantize {
    pub fn bits(self) -> u32 {
        match self {
            Quantize::Int8 => 8,
            Quantize::Int4 => 4,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Quantize::Int8 => "int8",
            Quantize::Int4 => "int4",
        }
    }
}

/// Bytes of a row's scale and bias: two fp16 values.
pub const SCALE_BIAS_BYTES: u64 = 4;

/// Bytes of `len` values stored in rows of `width` (a shorter last row allowed) at `bits` each.
pub fn quantized_bytes(len: usize, width: usize, bits: u32) -> u64 {
    let row = |w: usize| (w as u64 * bits as u64).div_ceil(8) + SCALE_BIAS_BYTES;
    let (full, rest) = (len / width, len % width);
    full as u64 * row(width) + if rest > 0 { row(rest) } else { 0 }
}

fn f16_round(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// Replaces `values`, row by row (rows of `width`), by their `bits`-bit row-wise quantization;
/// returns the stored bytes and the largest absolute change.
pub fn quantize_rows(values: &mut [f32], width: usize, bits: u32) -> (u64, f32) {
    assert!(width > 0 && (1..=16).contains(&bits));
    let levels = ((1u32 << bits) - 1) as f32;
    let mut worst = 0.0f32;
    for row in values.chunks_mut(width) {
        let lo = row.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let bias = f16_round(lo);
        let scale = f16_round((hi - bias) / levels);
        for x in row.iter_mut() {
            let q = if scale > 0.0 { ((*x - bias) / scale).round().clamp(0.0, levels) } else { 0.0 };
            let y = bias + q * scale;
            worst = worst.max((y - *x).abs());
            *x = y;
        }
    }
    (quantized_bytes(values.len(), width, bits), worst)
}

/// A method whose final tables are quantized row-wise after training.
pub struct Quantized {
    inner: Box<dyn EmbeddingMethod>,
    kind: Quantize,
    /// Stored parameter bytes, once quantized.
    bytes: Option<u64>,
}

impl Quantized {
    pub fn new(inner: Box<dyn EmbeddingMethod>, kind: Quantize) -> Self {
        Quantized { inner, kind, bytes: None }
    }

    fn quantize(&mut self) -> (u64, f32, usize) {
        let widths = self.inner.row_widths();
        let bits = self.kind.bits();
        let (mut bytes, mut worst, mut rows) = (0, 0.0f32, 0);
        for (p, w) in self.inner.parameters_mut().into_iter().zip(widths) {
            let (b, e) = quantize_rows(p, w, bits);
            bytes += b;
            worst = worst.max(e);
            rows += p.len().div_ceil(w);
        }
        (bytes, worst, rows)
    }
}

impl EmbeddingMethod for Quantized {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn vocab(&self) -> usize {
        self.inner.vocab()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn forward(&self, ids: &[u32], out: &mut [f32]) {
        self.inner.forward(ids, out)
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        self.inner.backward(ids, grad)
    }
    fn accounting(&self) -> Accounting {
        Accounting { quantized_param_bytes: self.bytes, ..self.inner.accounting() }
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        self.inner.parameters_mut()
    }
    fn row_widths(&mut self) -> Vec<usize> {
        self.inner.row_widths()
    }
    fn layout_snapshot(&self) -> Option<crate::Layout> {
        self.inner.layout_snapshot()
    }
    fn restore_layout(&mut self, layout: &crate::Layout) {
        self.inner.restore_layout(layout)
    }
    fn on_epoch_end(&mut self, epoch: usize) -> Result<HookReport, MethodError> {
        self.inner.on_epoch_end(epoch)
    }
    fn on_step(&mut self, step: usize) -> Result<HookReport, MethodError> {
        self.inner.on_step(step)
    }
    fn uses_step_hook(&self) -> bool {
        self.inner.uses_step_hook()
    }
    /// PEP's full table before its prune is not within budget: quantizing it changes nothing
    /// about that (without this, `pep` with `quantize:` let pre-prune evaluations be its best).
    fn within_budget(&self) -> bool {
        self.inner.within_budget()
    }
    fn on_train_end(&mut self) -> Result<HookReport, MethodError> {
        if self.bytes.is_some() {
            return Ok(HookReport::default());
        }
        let own = self.inner.on_train_end()?;
        let (bytes, worst, rows) = self.quantize();
        self.bytes = Some(bytes);
        let head = if own.changed { format!("{}; ", own.detail) } else { String::new() };
        let detail = format!("{head}{} {rows} rows, {bytes} bytes, largest change {worst:.3e}", self.kind.name());
        Ok(HookReport { changed: true, detail })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build_method, MethodParams};

    #[test]
    fn bytes_count_codes_and_scales_per_row() {
        // 10 rows of 16 at int8: 16 + 4 bytes a row; int4: 8 + 4.
        assert_eq!(quantized_bytes(160, 16, 8), 200);
        assert_eq!(quantized_bytes(160, 16, 4), 120);
        // A shorter last row, and odd widths rounded up to whole bytes at int4.
        assert_eq!(quantized_bytes(10, 4, 8), 2 * 8 + (2 + 4));
        assert_eq!(quantized_bytes(5, 5, 4), 3 + 4);
        assert_eq!(quantized_bytes(0, 4, 8), 0);
    }

    #[test]
    fn quantized_rows_are_close_and_keep_their_range() {
        let mut v: Vec<f32> = (0..64).map(|i| ((i * 37 % 64) as f32 / 64.0 - 0.5) * 0.1).collect();
        let orig = v.clone();
        for (bits, tol) in [(8, 0.1 / 255.0), (4, 0.1 / 15.0)] {
            let mut q = orig.clone();
            let (bytes, worst) = quantize_rows(&mut q, 16, bits);
            assert_eq!(bytes, quantized_bytes(64, 16, bits));
            // Half a step of the row's range, plus fp16 rounding of the scale and bias.
            assert!(worst <= 0.5 * tol * 1.02 + 1e-4, "{bits} bits: {worst}");
            let change = q.iter().zip(&orig).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert_eq!(change, worst);
            // Each row holds at most 2^bits distinct values.
            for row in q.chunks(16) {
                let mut d: Vec<u32> = row.iter().map(|x| x.to_bits()).collect();
                d.sort();
                d.dedup();
                assert!(d.len() <= 1 << bits);
            }
        }
        // A constant row stays (to fp16) constant; quantizing twice changes nothing more.
        let mut c = vec![0.25f32; 8];
        quantize_rows(&mut c, 8, 4);
        assert!(c.iter().all(|&x| x == 0.25));
        quantize_rows(&mut v, 16, 8);
        let once = v.clone();
        quantize_rows(&mut v, 16, 8);
        assert!(v.iter().zip(&once).all(|(a, b)| (a - b).abs() <= 1e-6));
    }

    /// The wrapper trains as the method alone, and after training serves quantized rows counted
    /// in its accounting (CE's rows are its sub-vectors: dim / n_chunks values).
    #[test]
    fn a_wrapped_method_trains_alike_and_serves_quantized() {
        let p = MethodParams::new(500, 16, 1600).with_options(serde_json::json!({ "n_chunks": 4 }));
        let mut plain = build_method("ce", &p).unwrap();
        let mut q = Quantized::new(build_method("ce", &p).unwrap(), Quantize::Int4);
        let ids: Vec<u32> = (0..64).map(|i| (i * 7) % 500).collect();
        let grad: Vec<f32> = (0..64 * 16).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
        let (mut a, mut b) = (vec![0.0; 64 * 16], vec![0.0; 64 * 16]);
        for _ in 0..3 {
            plain.backward(&ids, &grad);
            q.backward(&ids, &grad);
        }
        plain.forward(&ids, &mut a);
        q.forward(&ids, &mut b);
        assert_eq!(a, b);
        assert_eq!(q.accounting(), plain.accounting());
        let r = q.on_train_end().unwrap();
        assert!(r.changed, "{r:?}");
        let acc = q.accounting();
        let widths = plain.row_widths();
        assert!(widths.iter().all(|&w| w == 4), "{widths:?}");
        let expect: u64 = plain.parameters_mut().iter().map(|s| quantized_bytes(s.len(), 4, 4)).sum();
        assert_eq!(acc.quantized_param_bytes, Some(expect));
        assert_eq!(acc.trainable_params, plain.accounting().trainable_params);
        assert_eq!(acc.total_bytes(), plain.accounting().total_bytes() - 4 * acc.trainable_params + expect);
        q.forward(&ids, &mut b);
        assert_ne!(a, b);
        let err = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(err < 0.05, "{err}");
        // A second call does nothing.
        assert!(!q.on_train_end().unwrap().changed);
    }

    #[test]
    fn accounting_sums_quantized_and_plain_tables() {
        let plain = Accounting {
            trainable_params: 10,
            optimizer_state_bytes: 0,
            index_bytes: 0,
            other_bytes: 0,
            ..Accounting::default()
        };
        let quant = Accounting { quantized_param_bytes: Some(7), ..plain };
        let mut a = plain;
        a.add(&quant);
        assert_eq!((a.trainable_params, a.param_bytes()), (20, 47));
        let mut b = plain;
        b.add(&plain);
        assert_eq!((b.quantized_param_bytes, b.param_bytes()), (None, 80));
    }

    /// The wrapper agrees with the method it wraps on every defaulted hook, before and after
    /// a training step's hooks run (a hook the wrapper forgets falls back to the default).
    #[test]
    fn the_wrapper_forwards_every_defaulted_hook() {
        for name in crate::method_names() {
            let p = crate::testing::with_counts(
                name,
                MethodParams::new(2000, 16, 16 * 400).with_epochs(2).with_steps(10, None),
            );
            let mut plain = build_method(name, &p).unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut wrapped = Quantized::new(build_method(name, &p).unwrap(), Quantize::Int8);
            let facts = |m: &mut dyn EmbeddingMethod| {
                (m.uses_step_hook(), m.within_budget(), m.row_widths(), m.layout_snapshot().is_some())
            };
            assert_eq!(facts(plain.as_mut()), facts(&mut wrapped), "{name}: before training");
            for step in 1..=10 {
                let (a, b) = (plain.on_step(step).map(|r| r.changed), wrapped.on_step(step).map(|r| r.changed));
                assert_eq!(a.is_ok(), b.is_ok(), "{name}: on_step({step})");
                assert_eq!(plain.within_budget(), wrapped.within_budget(), "{name}: within_budget after step {step}");
            }
            let (a, b) = (plain.on_epoch_end(0).map(|r| r.changed), wrapped.on_epoch_end(0).map(|r| r.changed));
            assert_eq!(a.is_ok(), b.is_ok(), "{name}: on_epoch_end");
            assert_eq!(facts(plain.as_mut()), facts(&mut wrapped), "{name}: after the hooks");
        }
    }

    /// Every registered method says a width for each parameter slice, and quantizing any of
    /// them at int8 stores fewer bytes than f32 whenever its rows are at least 8 wide.
    #[test]
    fn every_method_quantizes_its_own_rows() {
        for name in crate::method_names() {
            let p = crate::testing::with_counts(name, MethodParams::new(2000, 16, 16 * 400));
            let mut m =
                Quantized::new(build_method(name, &p).unwrap_or_else(|e| panic!("{name}: {e}")), Quantize::Int8);
            m.on_train_end().unwrap();
            // After training: PQ/RQ have compressed (their rows are now codewords).
            let widths = m.row_widths();
            let lens: Vec<usize> = m.parameters_mut().iter().map(|s| s.len()).collect();
            assert_eq!(widths.len(), lens.len(), "{name}");
            assert!(widths.iter().all(|&w| w >= 1), "{name}: {widths:?}");
            let acc = m.accounting();
            let train = Accounting { quantized_param_bytes: None, ..acc };
            let expect: u64 = lens.iter().zip(&widths).map(|(&l, &w)| quantized_bytes(l, w, 8)).sum();
            assert_eq!(acc.quantized_param_bytes, Some(expect), "{name}");
            if widths.iter().all(|&w| w >= 8) {
                assert!(
                    acc.param_bytes() < train.param_bytes(),
                    "{name}: {} vs {}",
                    acc.param_bytes(),
                    train.param_bytes()
                );
            }
        }
    }
}
