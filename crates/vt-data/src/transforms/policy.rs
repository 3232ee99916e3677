//! Tables of AutoAugment and RandAugment: torchvision's ImageNet policy (25 sub-policies of two
//! `(op, probability, magnitude bin)` entries) and the magnitude bins of every op, computed as
//! torchvision computes them (`torch.linspace` in float32).

use super::ops::AugOp;
use AugOp::*;

/// One entry of a sub-policy: apply `op` with probability `p` at magnitude bin `bin`
/// (`None` for ops without a magnitude).
pub type PolicyOp = (AugOp, f64, Option<usize>);

/// `torchvision.transforms.AutoAugmentPolicy.IMAGENET`, in torchvision's order.
pub const IMAGENET_POLICY: [[PolicyOp; 2]; 25] = [
    [(Posterize, 0.4, Some(8)), (Rotate, 0.6, Some(9))],
    [(Solarize, 0.6, Some(5)), (AutoContrast, 0.6, None)],
    [(Equalize, 0.8, None), (Equalize, 0.6, None)],
    [(Posterize, 0.6, Some(7)), (Posterize, 0.6, Some(6))],
    [(Equalize, 0.4, None), (Solarize, 0.2, Some(4))],
    [(Equalize, 0.4, None), (Rotate, 0.8, Some(8))],
    [(Solarize, 0.6, Some(3)), (Equalize, 0.6, None)],
    [(Posterize, 0.8, Some(5)), (Equalize, 1.0, None)],
    [(Rotate, 0.2, Some(3)), (Solarize, 0.6, Some(8))],
    [(Equalize, 0.6, None), (Posterize, 0.4, Some(6))],
    [(Rotate, 0.8, Some(8)), (Color, 0.4, Some(0))],
    [(Rotate, 0.4, Some(9)), (Equalize, 0.6, None)],
    [(Equalize, 0.0, None), (Equalize, 0.8, None)],
    [(Invert, 0.6, None), (Equalize, 1.0, None)],
    [(Color, 0.6, Some(4)), (Contrast, 1.0, Some(8))],
    [(Rotate, 0.8, Some(8)), (Color, 1.0, Some(2))],
    [(Color, 0.8, Some(8)), (Solarize, 0.8, Some(7))],
    [(Sharpness, 0.4, Some(7)), (Invert, 0.6, None)],
    [(ShearX, 0.6, Some(5)), (Equalize, 1.0, None)],
    [(Color, 0.4, Some(0)), (Equalize, 0.6, None)],
    [(Equalize, 0.4, None), (Solarize, 0.2, Some(4))],
    [(Solarize, 0.6, Some(5)), (AutoContrast, 0.6, None)],
    [(Invert, 0.6, None), (Equalize, 1.0, None)],
    [(Color, 0.6, Some(4)), (Contrast, 1.0, Some(8))],
    [(Equalize, 0.8, None), (Equalize, 0.6, None)],
];

/// The ops AutoAugment's space defines (torchvision order).
pub const AUTOAUGMENT_OPS: [AugOp; 14] = [
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Rotate,
    Brightness,
    Color,
    Contrast,
    Sharpness,
    Posterize,
    Solarize,
    AutoContrast,
    Equalize,
    Invert,
];

/// The ops RandAugment draws from (torchvision order: `Identity` first, no `Invert`).
pub const RANDAUGMENT_OPS: [AugOp; 14] = [
    Identity,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Rotate,
    Brightness,
    Color,
    Contrast,
    Sharpness,
    Posterize,
    Solarize,
    AutoContrast,
    Equalize,
];

/// `torch.linspace(start, end, steps)` in float32 as PyTorch computes it: `step` in float32,
/// the first half `start + step·i`, the second half `end − step·(steps−1−i)`, each product
/// and sum rounded once (checked against torch 2.15 for every table in the tests).
pub fn linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (s, e) = (start as f32, end as f32);
    if steps == 1 {
        return vec![s];
    }
    let step = ((e - s) / (steps - 1) as f32) as f64;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                (s as f64 + step * i as f64) as f32
            } else {
                (e as f64 - step * (steps - i - 1) as f64) as f32
            }
        })
        .collect()
}

/// Whether an op's magnitude gets a random sign.
pub fn is_signed(op: AugOp) -> bool {
    matches!(
        op,
        ShearX
            | ShearY
            | TranslateX
            | TranslateY
            | Rotate
            | Brightness
            | Color
            | Contrast
            | Sharpness
    )
}

/// The magnitude bins of `op` for an image of `(height, width)` (`None`: the op takes none).
/// Same tables in AutoAugment (10 bins) and RandAugment (31 bins, default).
pub fn magnitudes(op: AugOp, bins: usize, height: usize, width: usize) -> Option<Vec<f64>> {
    let lin = |end: f64| linspace_f32(0.0, end, bins);
    let v: Vec<f32> = match op {
        ShearX | ShearY => lin(0.3),
        TranslateX => lin(150.0 / 331.0 * width as f64),
        TranslateY => lin(150.0 / 331.0 * height as f64),
        Rotate => lin(30.0),
        Brightness | Color | Contrast | Sharpness => lin(0.9),
        Posterize => {
            let d = ((bins - 1) as f64 / 4.0) as f32;
            (0..bins)
                .map(|i| (8.0 - i as f32 / d).round_ties_even())
                .collect()
        }
        Solarize => linspace_f32(1.0, 0.0, bins),
        Identity | AutoContrast | Equalize | Invert => return None,
    };
    Some(v.into_iter().map(f64::from).collect())
}
