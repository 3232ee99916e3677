//! The gather under a convolution window (im2col) and its adjoint (col2im), one plane at a
//! time, for [`crate::conv`].
//!
//! Wide stride-1 planes are gathered a tap row at a time by contiguous copies. Small planes
//! and strided windows are gathered through a table of source indices ([`Im2col`]), built
//! once per column matrix and used for each of its `C·t` planes: at 4 px a row-wise copy moves
//! 4 elements per call, and the strided form reads one element at a time anyway.

/// Window geometry along one axis (square kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub dilation: usize,
}

impl Window {
    pub fn out(&self, n: usize) -> usize {
        (n + 2 * self.pad - self.dilation * (self.k - 1) - 1) / self.stride + 1
    }

    /// For kernel offset `kd` along an axis of input size `n`: the output positions whose
    /// source `o·stride − pad + kd·dilation` lies inside `[0, n)`, as a half-open range.
    pub fn valid(&self, kd: usize, n: usize, n_out: usize) -> (usize, usize) {
        let off = kd * self.dilation;
        // o·s + off ≥ pad  and  o·s + off < n + pad
        let lo = if off >= self.pad {
            0
        } else {
            (self.pad - off).div_ceil(self.stride)
        };
        let hi = if n + self.pad > off {
            ((n + self.pad - off - 1) / self.stride + 1).min(n_out)
        } else {
            0
        };
        (lo.min(hi), hi)
    }
}

/// Output widths below this take the gather table; from it on, a stride-1 tap row is a few
/// long copies.
const GATHER_MAX_WIDTH: usize = 16;
/// The largest gather table (entries, `k²·L`): 64 KB of indices, beside the plane in L2. The
/// ImageNet stem (7×7 stride 2 at 224 px, 614 k entries) keeps the row-wise gather.
const GATHER_MAX_TABLE: usize = 1 << 14;

/// How [`Im2col::plane`] gathers the planes of one convolution.
pub(crate) enum Im2col {
    /// Row-wise copies ([`im2col_plane`]).
    Rows,
    /// `src[r·L + p]`: the plane index that tap `r` of output `p` reads, or the plane's size
    /// for a zero (padding).
    Table(Vec<u32>),
}

impl Im2col {
    /// The gather for planes `h × wd` under `w`.
    pub fn new(w: &Window, h: usize, wd: usize) -> Self {
        let (ho, wo) = (w.out(h), w.out(wd));
        let entries = w.k * w.k * ho * wo;
        let small = w.stride > 1 || wo < GATHER_MAX_WIDTH;
        if !small || entries > GATHER_MAX_TABLE || h * wd >= u32::MAX as usize {
            return Self::Rows;
        }
        // the source `o·stride − pad + k·dilation` along an axis of size n, if inside it
        let at = |o: usize, k: usize, n: usize| {
            (o * w.stride + k * w.dilation)
                .checked_sub(w.pad)
                .filter(|&i| i < n)
        };
        let mut src = Vec::with_capacity(entries);
        for ky in 0..w.k {
            for kx in 0..w.k {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let i = match (at(oy, ky, h), at(ox, kx, wd)) {
                            (Some(iy), Some(ix)) => iy * wd + ix,
                            _ => h * wd,
                        };
                        src.push(i as u32);
                    }
                }
            }
        }
        Self::Table(src)
    }

    /// Writes the k² tap rows of one input plane `h × wd`; row r starts at
    /// `dst[r·row_stride]`.
    pub fn plane<T: Copy + Default>(
        &self,
        w: &Window,
        src: &[T],
        h: usize,
        wd: usize,
        dst: &mut [T],
        row_stride: usize,
    ) {
        let Self::Table(table) = self else {
            return im2col_plane(w, src, h, wd, dst, row_stride);
        };
        let l = w.out(h) * w.out(wd);
        for (r, taps) in table.chunks_exact(l).enumerate() {
            let row = &mut dst[r * row_stride..][..l];
            for (o, &i) in row.iter_mut().zip(taps) {
                *o = src.get(i as usize).copied().unwrap_or_default();
            }
        }
    }
}

/// [`Im2col::plane`] by row copies (the `Rows` gather).
fn im2col_plane<T: Copy + Default>(
    w: &Window,
    src: &[T],
    h: usize,
    wd: usize,
    dst: &mut [T],
    row_stride: usize,
) {
    let (ho, wo) = (w.out(h), w.out(wd));
    if w.stride == 1 && wo == wd {
        return im2col_same_plane(w, src, h, wd, dst, row_stride);
    }
    let l = ho * wo;
    for ky in 0..w.k {
        let (oy0, oy1) = w.valid(ky, h, ho);
        for kx in 0..w.k {
            let (ox0, ox1) = w.valid(kx, wd, wo);
            let r = ky * w.k + kx;
            let row = &mut dst[r * row_stride..r * row_stride + l];
            for oy in 0..ho {
                let out = &mut row[oy * wo..(oy + 1) * wo];
                if oy < oy0 || oy >= oy1 || ox0 >= ox1 {
                    out.fill(T::default());
                    continue;
                }
                let iy = oy * w.stride + ky * w.dilation - w.pad;
                let line = &src[iy * wd..(iy + 1) * wd];
                out[..ox0].fill(T::default());
                out[ox1..].fill(T::default());
                let ix0 = ox0 * w.stride + kx * w.dilation - w.pad;
                if w.stride == 1 {
                    out[ox0..ox1].copy_from_slice(&line[ix0..ix0 + (ox1 - ox0)]);
                } else {
                    for (j, o) in out[ox0..ox1].iter_mut().enumerate() {
                        *o = line[ix0 + j * w.stride];
                    }
                }
            }
        }
    }
}

/// [`im2col_plane`] of a stride-1 window whose output is as wide as its input: each tap's row
/// is the plane shifted by `dy·W + dx`, so it is one contiguous copy, after which the few
/// outputs whose source lies in the padding (a column or two per line) are zeroed. At 28 px
/// this replaces k²·H short row copies by k² long ones.
fn im2col_same_plane<T: Copy + Default>(
    w: &Window,
    src: &[T],
    h: usize,
    wd: usize,
    dst: &mut [T],
    row_stride: usize,
) {
    let ho = w.out(h);
    let l = ho * wd;
    let zero = T::default();
    for ky in 0..w.k {
        let (oy0, oy1) = w.valid(ky, h, ho);
        let dy = (ky * w.dilation) as isize - w.pad as isize;
        for kx in 0..w.k {
            let (ox0, ox1) = w.valid(kx, wd, wd);
            let dx = (kx * w.dilation) as isize - w.pad as isize;
            let r = ky * w.k + kx;
            let row = &mut dst[r * row_stride..r * row_stride + l];
            // output p reads src[p + shift]; only rows oy0..oy1 have a source line
            let shift = dy * wd as isize + dx;
            let (a, b) = (oy0 * wd, oy1 * wd);
            let lo = (a as isize).max(-shift).min(b as isize) as usize;
            let hi = (b as isize).min((h * wd) as isize - shift).max(lo as isize) as usize;
            row[..lo].fill(zero);
            if hi > lo {
                let from = (lo as isize + shift) as usize;
                row[lo..hi].copy_from_slice(&src[from..from + (hi - lo)]);
            }
            row[hi..].fill(zero);
            // the columns whose source is left or right of the line (wrapped by the shift)
            if ox0 > 0 || ox1 < wd {
                for line in row[a..b].chunks_exact_mut(wd) {
                    line[..ox0].fill(zero);
                    line[ox1..].fill(zero);
                }
            }
        }
    }
}

/// Sums the k² tap rows back into one plane (overwriting it); row r starts at
/// `cols[r·row_stride]`.
pub(crate) fn col2im_plane<T: Copy + Default + std::ops::AddAssign>(
    w: &Window,
    cols: &[T],
    h: usize,
    wd: usize,
    dst: &mut [T],
    row_stride: usize,
) {
    let (ho, wo) = (w.out(h), w.out(wd));
    let l = ho * wo;
    dst.fill(T::default());
    for ky in 0..w.k {
        let (oy0, oy1) = w.valid(ky, h, ho);
        for kx in 0..w.k {
            let (ox0, ox1) = w.valid(kx, wd, wo);
            if ox0 >= ox1 {
                continue;
            }
            let r = ky * w.k + kx;
            let row = &cols[r * row_stride..r * row_stride + l];
            for oy in oy0..oy1 {
                let iy = oy * w.stride + ky * w.dilation - w.pad;
                let ix0 = ox0 * w.stride + kx * w.dilation - w.pad;
                let line = &mut dst[iy * wd..(iy + 1) * wd];
                let src = &row[oy * wo + ox0..oy * wo + ox1];
                if w.stride == 1 {
                    // contiguous on both sides: a vectorised add
                    for (d, &v) in line[ix0..ix0 + src.len()].iter_mut().zip(src) {
                        *d += v;
                    }
                } else {
                    for (j, &v) in src.iter().enumerate() {
                        line[ix0 + j * w.stride] += v;
                    }
                }
            }
        }
    }
}
