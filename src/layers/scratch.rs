//! Reusable buffers for the image layers.
//!
//! One training step of a convolutional network needs many large temporary buffers: the `cols`
//! matrices of the convolutions, and activations and gradients that live for one layer or one
//! block. Asked for afresh every time, the allocator hands out new pages (large blocks are mapped
//! and unmapped by the system), and every 4 KiB page then costs a page fault and a zero fill by
//! the kernel on first touch, which on an image layer takes longer than the arithmetic.
//!
//! Instead, each thread keeps a small pool of released buffers: [`take`] returns the best-fitting
//! pooled buffer (or a new one), [`give`] and [`recycle`] put a buffer that is no longer needed
//! back, and [`Scratch`] does both around a scope. A buffer from the pool holds stale values of
//! its last use: every caller writes each element before reading it. Nothing here is shared
//! between threads, and pooling changes no result.

use std::any::Any;
use std::cell::RefCell;

use ndarray::{Array, Dimension, IntoDimension};

use crate::Scalar;

thread_local! {
    /// Buffers released on this thread, of any element type.
    static POOL: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// At most this many buffers wait in one thread's pool; beyond that the smallest is freed.
const POOL_MAX: usize = 8;

/// A buffer of `len` elements with unspecified (stale) values: the pooled `Vec<F>` of least
/// capacity that holds `len` elements, or a new one.
pub(crate) fn take<F: Scalar>(len: usize) -> Vec<F> {
    let pooled = POOL
        .try_with(|pool| {
            let mut pool = pool.borrow_mut();
            let i = (0..pool.len())
                .filter_map(|i| {
                    let cap = pool[i].downcast_ref::<Vec<F>>()?.capacity();
                    (cap >= len).then_some((i, cap))
                })
                .min_by_key(|&(_, cap)| cap)?
                .0;
            pool.swap_remove(i).downcast::<Vec<F>>().ok()
        })
        .ok()
        .flatten();
    let mut buf = pooled.map_or_else(|| Vec::with_capacity(len), |b| *b);
    buf.resize(len, F::zero()); // fills only the elements beyond the old length
    buf
}

/// An array of `shape` on a buffer from [`take`]: stale values, every one to be written by the
/// caller before it is read.
pub(crate) fn array<F: Scalar, D: Dimension>(shape: impl IntoDimension<Dim = D>) -> Array<F, D> {
    let shape = shape.into_dimension();
    let buf = take(shape.size());
    Array::from_shape_vec(shape, buf).expect("the buffer holds the shape's size")
}

/// Puts `buf` back into this thread's pool for a later [`take`].
pub(crate) fn give<F: Scalar>(buf: Vec<F>) {
    if buf.capacity() == 0 {
        return;
    }
    // During thread teardown the pool may be gone: then the buffer is simply freed.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        pool.push(Box::new(buf));
        if pool.len() > POOL_MAX {
            let smallest = (0..pool.len())
                .min_by_key(|&i| capacity_in_bytes(pool[i].as_ref()))
                .expect("pool is not empty");
            pool.swap_remove(smallest);
        }
    });
}

/// Puts the storage of an array that is no longer needed back into this thread's pool.
pub(crate) fn recycle<F: Scalar, D: Dimension>(a: Array<F, D>) {
    give(a.into_raw_vec_and_offset().0);
}

/// The capacity of a pooled `Vec<f32>` or `Vec<f64>` in bytes.
fn capacity_in_bytes(b: &dyn Any) -> usize {
    if let Some(v) = b.downcast_ref::<Vec<f32>>() {
        v.capacity() * 4
    } else if let Some(v) = b.downcast_ref::<Vec<f64>>() {
        v.capacity() * 8
    } else {
        0
    }
}

/// A buffer of `len` elements from [`take`], given back to the pool when dropped: the scratch
/// matrix of one task (e.g. the `cols` of a convolution). Its values are stale until written.
pub(crate) struct Scratch<F: Scalar>(Vec<F>);

impl<F: Scalar> Scratch<F> {
    pub(crate) fn take(len: usize) -> Self {
        Scratch(take(len))
    }
}

impl<F: Scalar> std::ops::Deref for Scratch<F> {
    type Target = [F];
    fn deref(&self) -> &[F] {
        &self.0
    }
}

impl<F: Scalar> std::ops::DerefMut for Scratch<F> {
    fn deref_mut(&mut self) -> &mut [F] {
        &mut self.0
    }
}

impl<F: Scalar> Drop for Scratch<F> {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_reuses_the_best_fitting_buffer_and_keeps_types_apart() {
        // Runs on its own test thread: the pool starts empty.
        let mut big = take::<f32>(1000);
        big.fill(7.0);
        let big_ptr = big.as_ptr();
        let small = take::<f32>(10);
        let small_ptr = small.as_ptr();
        give(big);
        give(small);
        // An f64 request finds no f64 buffer: a new zero-filled one.
        let other = take::<f64>(10);
        assert_eq!(other, vec![0.0; 10]);
        // The 10-element buffer fits best; the 1000-element one is left for a larger request.
        let again = take::<f32>(8);
        assert_eq!((again.len(), again.as_ptr()), (8, small_ptr));
        let reused = take::<f32>(500);
        assert_eq!(reused.as_ptr(), big_ptr);
        assert_eq!(reused.len(), 500);
        assert!(reused.iter().all(|&v| v == 7.0), "stale values, not zeros");
    }

    #[test]
    fn the_pool_is_bounded_and_frees_the_smallest() {
        for len in 1..=POOL_MAX + 3 {
            give(vec![0.0f32; len * 100]);
        }
        let n = POOL.with(|p| p.borrow().len());
        assert_eq!(n, POOL_MAX);
        // The three smallest were freed: a 300-element request gets the 400-element buffer.
        assert_eq!(take::<f32>(300).capacity(), 400);
    }
}
