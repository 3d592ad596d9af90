//! The codec's CPU path: fused kernels on host memory, used when a tensor is a contiguous f32
//! CPU tensor (the tensor-op path in `codec` serves every other device).
//!
//! The plain tensor ops pass over a whole parameter several times (block permute, abs, top-k,
//! gather, zero fill, two scatters, a division, the permute back). These kernels read the
//! parameter where it lies, block by block, and keep each block's work in cache: selection
//! reads every element once, decoding writes every element once. Bands of blocks run on
//! rayon's threads (libtorch's own pool is idle meanwhile).
//!
//! Results equal the tensor-op path's (`host::tests` checks it, on CUDA too when there is one):
//! the same coordinates (larger |x| first, the lower index on a tie, block-local indices in
//! ascending order), the same values, and scatter-mean sums in peer order.

pub mod scatter;
#[cfg(test)]
mod tests;
pub mod topk;

use super::BlockLayout;
use tch::{Device, Kind, Tensor};

/// Where a layout's blocks lie in a row-major buffer: `rows` x `cols`, cut into `h` x `w`
/// tiles numbered row-major. Coefficient blocks [nb, h*w] are the tiles of an nb x (h*w)
/// buffer with h = 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiles {
    pub rows: usize,
    pub cols: usize,
    pub h: usize,
    pub w: usize,
}

impl Tiles {
    /// The layout's tiles in the tensor itself.
    pub fn of_tensor(l: &BlockLayout) -> Self {
        Self {
            rows: l.rows as usize,
            cols: l.cols as usize,
            h: l.h as usize,
            w: l.w as usize,
        }
    }

    /// The layout's blocks as rows of a [nb, h*w] coefficient buffer.
    pub fn of_coefficients(l: &BlockLayout) -> Self {
        Self {
            rows: l.num_blocks() as usize,
            cols: l.block_size() as usize,
            h: 1,
            w: l.block_size() as usize,
        }
    }

    pub fn block_size(&self) -> usize {
        self.h * self.w
    }

    /// Blocks in all (0 for an empty tensor).
    pub fn blocks(&self) -> usize {
        if self.is_empty() {
            0
        } else {
            self.rows / self.h * self.per_band()
        }
    }

    /// Tiles per band (a band is `h` full rows: `h * cols` contiguous elements).
    pub fn per_band(&self) -> usize {
        self.cols / self.w
    }

    pub fn band_len(&self) -> usize {
        self.h * self.cols
    }

    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offset inside a band of element `i` (block-local, row-major in the tile) of the band's
    /// tile `x`.
    #[inline]
    pub fn offset(&self, x: usize, i: usize) -> usize {
        // Blocks are 2^n wide but for odd shapes; a shift instead of a division matters
        // in the per-coefficient loops.
        let (row, col) = if self.w.is_power_of_two() {
            (i >> self.w.trailing_zeros(), i & (self.w - 1))
        } else {
            (i / self.w, i % self.w)
        };
        row * self.cols + x * self.w + col
    }

    /// Bands per rayon task: enough elements that scheduling costs nothing.
    fn bands_per_task(&self) -> usize {
        (1usize << 16).div_ceil(self.band_len().max(1))
    }
}

/// An uninitialised CPU tensor for a kernel to fill. A large one asks the kernel for huge
/// pages first: a fresh allocation is otherwise faulted in 4 KiB at a time, which cost more
/// than the decoding itself (50 ms of a 60 ms embedding decode on a 2-core machine; with
/// transparent huge pages in `madvise` mode, as on most distributions, only asked-for
/// regions get them).
pub fn empty(shape: &[i64], kind: Kind) -> Tensor {
    let t = Tensor::empty(shape, (kind, Device::Cpu));
    let bytes = t.numel() * kind.elt_size_in_bytes();
    const HUGE: usize = 2 << 20;
    if bytes >= 2 * HUGE {
        let start = (t.data_ptr() as usize).next_multiple_of(HUGE);
        let end = (t.data_ptr() as usize + bytes) / HUGE * HUGE;
        if end > start {
            // SAFETY: advice only, on whole pages inside this tensor's allocation; a kernel
            // without transparent huge pages ignores it or fails, and either is harmless.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    t
}

/// Whether the fused kernels can read `t` in place.
pub fn on_host(t: &Tensor, kind: Kind) -> bool {
    t.device() == Device::Cpu && t.kind() == kind && t.is_contiguous()
}

/// A contiguous f32 CPU tensor's elements.
pub fn f32s(t: &Tensor) -> &[f32] {
    assert!(on_host(t, Kind::Float), "a contiguous f32 CPU tensor");
    // SAFETY: checked above: CPU memory of numel f32s in order, alive as long as `t`.
    unsafe { slice(t) }
}

/// A contiguous i16 CPU tensor's elements.
pub fn i16s(t: &Tensor) -> &[i16] {
    assert!(on_host(t, Kind::Int16), "a contiguous i16 CPU tensor");
    // SAFETY: as in `f32s`.
    unsafe { slice(t) }
}

/// A contiguous f32 CPU tensor's elements, to write. The caller's `&mut` is the only handle
/// the kernels write through; a tensor sharing this storage must not be read meanwhile.
pub fn f32s_mut(t: &mut Tensor) -> &mut [f32] {
    assert!(on_host(t, Kind::Float), "a contiguous f32 CPU tensor");
    // SAFETY: checked above.
    unsafe { slice_mut(t) }
}

/// A contiguous i16 CPU tensor's elements, to write (see [`f32s_mut`]).
pub fn i16s_mut(t: &mut Tensor) -> &mut [i16] {
    assert!(on_host(t, Kind::Int16), "a contiguous i16 CPU tensor");
    // SAFETY: checked above.
    unsafe { slice_mut(t) }
}

/// # Safety
/// `t` is a contiguous CPU tensor whose elements are `T`.
unsafe fn slice<T>(t: &Tensor) -> &[T] {
    let n = t.numel();
    if n == 0 {
        return &[];
    }
    // SAFETY: per the contract; the data pointer is non-null for a non-empty tensor.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const T, n) }
}

/// # Safety
/// As [`slice`]; `t` is borrowed mutably for the slice's life.
unsafe fn slice_mut<T>(t: &mut Tensor) -> &mut [T] {
    let n = t.numel();
    if n == 0 {
        return &mut [];
    }
    // SAFETY: per the contract; the data pointer is non-null for a non-empty tensor.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut T, n) }
}
