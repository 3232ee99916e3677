//! Seeded mutations of a file's bytes, for the robustness tests of every reader in vt (data
//! sets, images, weights, checkpoints, configs, logs): a reader given any of them must return
//! a value or its error, never panic. Format-specific header edits (huge or zero dimensions,
//! wrong counts, offsets past the end) are written by each test with [`overwrite`].

use crate::Rng;

/// One mutated copy of a file and what was done to it (for the failure message).
#[derive(Clone, Debug)]
pub struct Mutant {
    pub what: String,
    pub bytes: Vec<u8>,
}

/// The lengths a file is cut to: 0, a few bytes, 10 %, 50 %, 90 %, 99 %, all but the last
/// byte, and `extra` more spread evenly (deduplicated, all shorter than `len`).
pub fn cut_points(len: usize, extra: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = [0, 1, 2, 4, 8, 16]
        .into_iter()
        .chain([0.1, 0.5, 0.9, 0.99].map(|f| (len as f64 * f) as usize))
        .chain(len.checked_sub(1))
        .chain((1..=extra).map(|k| len * k / (extra + 1)))
        .filter(|&c| c < len)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Truncations of `bytes` at [`cut_points`].
pub fn truncations(bytes: &[u8], extra: usize) -> Vec<Mutant> {
    cut_points(bytes.len(), extra)
        .into_iter()
        .map(|n| Mutant {
            what: format!("truncated to {n} of {} bytes", bytes.len()),
            bytes: bytes[..n].to_vec(),
        })
        .collect()
}

/// `count` copies of `bytes`, each with 1 to 4 random bytes XOR-ed with a random non-zero
/// mask, from `seed`. Positions are drawn from `range` (the whole file when `None`), so a
/// test can aim at a header.
pub fn byte_flips(
    bytes: &[u8],
    seed: u64,
    count: usize,
    range: Option<std::ops::Range<usize>>,
) -> Vec<Mutant> {
    let range = range.unwrap_or(0..bytes.len());
    let range = range.start.min(bytes.len())..range.end.min(bytes.len());
    if range.is_empty() {
        return Vec::new();
    }
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let mut out = bytes.to_vec();
            let mut spots = Vec::new();
            for _ in 0..1 + rng.below(4) {
                let at = range.start + rng.below(range.len() as u64) as usize;
                let mask = 1 + rng.below(255) as u8;
                out[at] ^= mask;
                spots.push(format!("{at}^{mask:#04x}"));
            }
            Mutant {
                what: format!("bytes flipped at {}", spots.join(", ")),
                bytes: out,
            }
        })
        .collect()
}

/// A copy of `bytes` with `patch` written at `at` (clipped to the file's end).
pub fn overwrite(bytes: &[u8], at: usize, patch: &[u8], what: impl Into<String>) -> Mutant {
    let mut out = bytes.to_vec();
    for (i, &b) in patch.iter().enumerate() {
        if let Some(slot) = out.get_mut(at + i) {
            *slot = b;
        }
    }
    Mutant {
        what: what.into(),
        bytes: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_are_short_distinct_and_cover_the_fractions() {
        let cuts = cut_points(1000, 3);
        assert_eq!(
            cuts,
            vec![0, 1, 2, 4, 8, 16, 100, 250, 500, 750, 900, 990, 999]
        );
        assert_eq!(cut_points(1, 5), vec![0]);
        assert!(cut_points(0, 5).is_empty());
    }

    #[test]
    fn flips_change_bytes_inside_the_range_and_repeat_by_seed() {
        let base = vec![0u8; 64];
        let a = byte_flips(&base, 7, 20, Some(8..16));
        let b = byte_flips(&base, 7, 20, Some(8..16));
        for (m, n) in a.iter().zip(&b) {
            assert_eq!(m.bytes, n.bytes);
            let changed: Vec<usize> = (0..64).filter(|&i| m.bytes[i] != 0).collect();
            assert!(!changed.is_empty() && changed.iter().all(|i| (8..16).contains(i)));
        }
        assert_eq!(overwrite(&[1, 2, 3], 2, &[9, 9], "x").bytes, vec![1, 2, 9]);
    }
}
