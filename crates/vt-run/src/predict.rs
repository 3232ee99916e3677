//! Segmentation predictions of a trained run, and PNG pictures of them: the class map of one
//! image, and overlays of image, ground truth and prediction side by side.

use crate::config::saved_config;
use crate::data::{open_segmentation_data, segmentation_pipelines};
use crate::error::{invalid, Result, RunError};
use crate::model::{checkpoint_weights, SegNet};
use candle_core::{DType, Device, ModuleT, Tensor};
use std::path::Path;
use vt_data::transforms::Prepare;
use vt_data::{Image, LabelMap, Rng, SegPipeline, SegSample, SegmentationData};

/// A trained segmentation run, ready to predict: its model and its eval pipeline.
pub struct Segmentation {
    net: SegNet,
    pipeline: SegPipeline,
    device: Device,
    pub num_classes: usize,
    /// Image channels the model reads.
    pub channels: usize,
    /// The run's data (its test split, class names, source).
    pub data: SegmentationData,
}

/// One test image with its ground truth and the model's class map.
pub struct Prediction {
    pub image: Image,
    pub truth: LabelMap,
    pub prediction: LabelMap,
    /// Logits `(K, H, W)` at the image's size (the padding cropped off).
    pub logits: Tensor,
}

impl Segmentation {
    /// The newest checkpoint of the segmentation run in `dir`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg = saved_config(dir)?;
        let data = open_segmentation_data(&cfg.data, cfg.train.seed)?;
        let (store, _, _) = checkpoint_weights(dir, device)?;
        let net = SegNet::new(&cfg.model, &store)?;
        store.finish()?;
        let channels = cfg.model.in_channels.unwrap_or(3);
        let (_, pipeline) = segmentation_pipelines(&cfg.data, channels)?;
        Ok(Self {
            num_classes: net.0.config().num_classes,
            channels,
            net,
            pipeline,
            device: device.clone(),
            data,
        })
    }

    /// The class map and logits of `image`, at its own size (padded to a multiple of 32 for
    /// the model, as evaluation does, and cropped back).
    pub fn predict(&self, image: &Image) -> Result<(LabelMap, Tensor)> {
        let (h, w) = (image.height, image.width);
        let sample = SegSample {
            image: image.clone(),
            label: LabelMap::new(w, h, vec![0; w * h])?,
        };
        let p = self.pipeline.prepare(sample, &mut Rng::new(0))?;
        let x = Tensor::from_vec(
            p.image.data,
            (1, p.image.channels, p.image.height, p.image.width),
            &self.device,
        )?;
        let train = false; // predictions use BN's running statistics, as evaluation does
        let logits = self
            .net
            .0
            .forward_t(&x, train)?
            .narrow(2, 0, h)?
            .narrow(3, 0, w)?
            .squeeze(0)?;
        let classes = logits.argmax(0)?.to_dtype(DType::U32)?;
        let data = classes
            .flatten_all()?
            .to_vec1::<u32>()?
            .into_iter()
            .map(|c| c as u8)
            .collect();
        Ok((LabelMap::new(w, h, data)?, logits))
    }

    /// Predictions on the first `n` test images of the run's data.
    pub fn predict_test(&self, n: usize) -> Result<Vec<Prediction>> {
        (0..n.min(self.data.test.len()))
            .map(|i| {
                let s = self.data.test.get(i)?;
                let (prediction, logits) = self.predict(&s.image)?;
                Ok(Prediction {
                    image: s.image,
                    truth: s.label,
                    prediction,
                    logits,
                })
            })
            .collect()
    }
}

/// PASCAL VOC's colour of class `k` (the devkit's bit-interleaving colour map); the ignore
/// index 255 is white.
pub fn class_colour(k: u8) -> [u8; 3] {
    if k == 255 {
        return [255; 3];
    }
    let (mut c, mut rgb) = (k, [0u8; 3]);
    for bit in 0..8 {
        for (ch, v) in rgb.iter_mut().enumerate() {
            *v |= ((c >> ch) & 1) << (7 - bit);
        }
        c >>= 3;
    }
    rgb
}

pub(crate) fn write_rgb(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| RunError::io("write", path, e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let bad = |e: png::EncodingError| RunError::Invalid(format!("{}: {e}", path.display()));
    enc.write_header()
        .map_err(bad)?
        .write_image_data(rgb)
        .map_err(bad)
}

/// The class map as a palette-coloured RGB PNG (VOC colours).
pub fn write_class_map(path: &Path, map: &LabelMap) -> Result<()> {
    let rgb: Vec<u8> = map.data.iter().flat_map(|&k| class_colour(k)).collect();
    write_rgb(path, map.width, map.height, &rgb)
}

/// One picture of three panels: the image, the ground truth blended over it, and the
/// prediction blended over it.
pub fn write_overlay(path: &Path, p: &Prediction) -> Result<()> {
    let (w, h) = (p.image.width, p.image.height);
    if (p.truth.width, p.truth.height) != (w, h)
        || (p.prediction.width, p.prediction.height) != (w, h)
    {
        invalid!(
            "overlay {}: maps differ in size from the {w}x{h} image",
            path.display()
        )
    }
    let pixel = |x: usize, y: usize| -> [u8; 3] {
        match p.image.channels {
            3 => std::array::from_fn(|c| p.image.at(x, y, c)),
            _ => [p.image.at(x, y, 0); 3],
        }
    };
    let mut rgb = vec![0u8; 3 * 3 * w * h];
    for y in 0..h {
        for x in 0..w {
            let px = pixel(x, y);
            for (panel, map) in [None, Some(&p.truth), Some(&p.prediction)]
                .iter()
                .enumerate()
            {
                let colour = match map {
                    None => px,
                    Some(m) => {
                        let c = class_colour(m.data[y * w + x]);
                        std::array::from_fn(|i| ((px[i] as u16 + c[i] as u16) / 2) as u8)
                    }
                };
                let o = 3 * (y * 3 * w + panel * w + x);
                rgb[o..o + 3].copy_from_slice(&colour);
            }
        }
    }
    write_rgb(path, 3 * w, h, &rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voc_colours() {
        assert_eq!(class_colour(0), [0, 0, 0]);
        assert_eq!(class_colour(1), [128, 0, 0]);
        assert_eq!(class_colour(2), [0, 128, 0]);
        assert_eq!(class_colour(15), [192, 128, 128]);
        assert_eq!(class_colour(255), [255, 255, 255]);
    }

    #[test]
    fn overlay_has_three_panels() -> Result<()> {
        let image = Image::filled(4, 2, 1, 100);
        let map = |v: u8| LabelMap::new(4, 2, vec![v; 8]);
        let p = Prediction {
            image,
            truth: map(1)?,
            prediction: map(2)?,
            logits: Tensor::zeros((3, 2, 4), DType::F32, &Device::Cpu)?,
        };
        let path = std::env::temp_dir().join(format!("vt-overlay-{}.png", std::process::id()));
        write_overlay(&path, &p)?;
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (12, 2));
        assert_eq!(&buf[..3], &[100, 100, 100]); // the image
        assert_eq!(&buf[12..15], &[114, 50, 50]); // (100 + 128) / 2, 100 / 2: class 1 over it
        assert_eq!(&buf[24..27], &[50, 114, 50]); // class 2
        Ok(())
    }
}
