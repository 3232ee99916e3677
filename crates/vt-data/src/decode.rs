//! Strict JPEG and PNG decoding: a file is either decoded whole or reported as unreadable.
//!
//! General-purpose decoders are lenient on purpose (a browser shows what it can of a cut
//! photo): `image`'s JPEG path fills a truncated scan with grey, and its PNG path never reads
//! past the last image-data chunk, so a file cut before its `IEND` or with a broken trailing
//! chunk decodes "fine". A training set must never look cleaner than it is, so vt decodes
//! as PIL does with truncation errors on, and stricter:
//! - JPEG: zune-jpeg in strict mode (short entropy data is an error, not grey) after a walk of
//!   the marker segments that requires every segment to be whole and the end-of-image marker
//!   to follow the last scan;
//! - PNG: the png crate with CRC and Adler-32 checks on, read through `IEND`.
//!
//! Both refuse headers claiming more than [`MAX_PIXELS`] pixels before allocating anything.

use std::path::Path;

use crate::error::{DataError, Result};

/// The largest image decoded (2^27 pixels, e.g. 11585 x 11585): a header above it is taken
/// for a corrupt one rather than allocated.
pub const MAX_PIXELS: usize = 1 << 27;

/// Why a JPEG or PNG file could not be decoded (the cause inside [`DataError::Decode`]).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("JPEG: {0}")]
    Jpeg(#[source] zune_jpeg::errors::DecodeErrors),
    #[error("PNG: {0}")]
    Png(#[source] png::DecodingError),
    /// The bytes end inside a segment or before the end marker.
    #[error("{format} file is truncated or corrupt: {what}")]
    Truncated { format: &'static str, what: String },
    #[error("{width}x{height} pixels is more than the {MAX_PIXELS} an image may have")]
    TooLarge { width: usize, height: usize },
    #[error("{0}")]
    Unsupported(String),
}

/// 8-bit interleaved pixels as a decoder produced them.
pub(crate) struct Decoded {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

fn decode_error(path: &Path, source: DecodeError) -> DataError {
    DataError::Decode {
        path: path.to_path_buf(),
        source,
    }
}

fn check_size(width: usize, height: usize) -> std::result::Result<(), DecodeError> {
    match width.checked_mul(height) {
        Some(n) if n <= MAX_PIXELS && n > 0 => Ok(()),
        _ => Err(DecodeError::TooLarge { width, height }),
    }
}

/// Decodes a JPEG or PNG file (chosen by its signature, not its name) to 8-bit RGB.
pub(crate) fn decode_rgb(path: &Path, bytes: &[u8]) -> Result<Decoded> {
    let decoded = if bytes.starts_with(&[0xFF, 0xD8]) {
        decode_jpeg(bytes)
    } else if bytes.starts_with(PNG_SIGNATURE) {
        decode_png(bytes, png::Transformations::normalize_to_color8()).and_then(png_to_rgb)
    } else {
        let head = &bytes[..bytes.len().min(8)];
        Err(DecodeError::Unsupported(format!(
            "not a JPEG or PNG file (first bytes {head:02x?})"
        )))
    };
    decoded.map_err(|e| decode_error(path, e))
}

/// Decodes a PNG without any transformation: the stored samples (palette indices stay
/// indices), for label maps. `channels` is the stored colour type's sample count.
pub(crate) fn decode_png_raw(path: &Path, bytes: &[u8]) -> Result<(Decoded, png::OutputInfo)> {
    decode_png(bytes, png::Transformations::IDENTITY).map_err(|e| decode_error(path, e))
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

fn decode_png(
    bytes: &[u8],
    transform: png::Transformations,
) -> std::result::Result<(Decoded, png::OutputInfo), DecodeError> {
    let mut decoder = png::Decoder::new_with_limits(
        std::io::Cursor::new(bytes),
        png::Limits {
            bytes: MAX_PIXELS * 8,
        },
    );
    decoder.set_transformations(transform);
    decoder.ignore_checksums(false); // CRC of every chunk and Adler-32 of the image data
    let mut reader = decoder.read_info().map_err(DecodeError::Png)?;
    let (w, h) = (reader.info().width as usize, reader.info().height as usize);
    check_size(w, h)?;
    let size = reader.output_buffer_size().ok_or(DecodeError::TooLarge {
        width: w,
        height: h,
    })?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(DecodeError::Png)?;
    // Reads the chunks after the image data through IEND, checking each CRC: a file cut
    // after its last IDAT is truncated too.
    reader.finish().map_err(DecodeError::Png)?;
    let channels = info.color_type.samples();
    let row = w * channels * (info.bit_depth as usize).div_ceil(8);
    let mut data = Vec::with_capacity(row * h);
    for line in buf.chunks(info.line_size).take(h) {
        data.extend_from_slice(&line[..row.min(line.len())]);
    }
    Ok((
        Decoded {
            width: w,
            height: h,
            channels,
            data,
        },
        info,
    ))
}

/// RGB from an 8-bit PNG after `normalize_to_color8` (grey, grey + alpha, RGB or RGBA; alpha
/// is dropped, as PIL's `convert("RGB")` does).
fn png_to_rgb((d, info): (Decoded, png::OutputInfo)) -> std::result::Result<Decoded, DecodeError> {
    use png::ColorType::*;
    let px = d.width * d.height;
    let data = match info.color_type {
        Rgb => d.data,
        Rgba => d
            .data
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        Grayscale => d.data.iter().flat_map(|&g| [g, g, g]).collect(),
        GrayscaleAlpha => d.data.chunks_exact(2).flat_map(|p| [p[0]; 3]).collect(),
        Indexed => {
            return Err(DecodeError::Unsupported(
                "palette PNG was not expanded".into(),
            ))
        }
    };
    if data.len() != px * 3 {
        return Err(DecodeError::Truncated {
            format: "PNG",
            what: format!(
                "{} bytes of pixels for {}x{}",
                data.len(),
                d.width,
                d.height
            ),
        });
    }
    Ok(Decoded {
        channels: 3,
        data,
        ..d
    })
}

fn decode_jpeg(bytes: &[u8]) -> std::result::Result<Decoded, DecodeError> {
    use zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
    check_jpeg_structure(bytes)?;
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(1 << 16)
        .set_max_height(1 << 16)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(DecodeError::Jpeg)?;
    let (w, h) = decoder
        .dimensions()
        .ok_or_else(|| DecodeError::Unsupported("JPEG without a frame header".into()))?;
    check_size(w, h)?;
    let data = decoder.decode().map_err(DecodeError::Jpeg)?;
    if data.len() != w * h * 3 {
        return Err(DecodeError::Truncated {
            format: "JPEG",
            what: format!("{} bytes of pixels for {w}x{h}", data.len()),
        });
    }
    Ok(Decoded {
        width: w,
        height: h,
        channels: 3,
        data,
    })
}

/// Walks the marker segments of a JPEG from SOI: every length-prefixed segment must fit in
/// the file, and after the last scan's entropy-coded data the end-of-image marker must come.
/// (Bytes after EOI are allowed, as every decoder allows them.)
fn check_jpeg_structure(bytes: &[u8]) -> std::result::Result<(), DecodeError> {
    let cut = |what: String| DecodeError::Truncated {
        format: "JPEG",
        what,
    };
    let n = bytes.len();
    let mut i = 2; // after SOI
    loop {
        // Extraneous bytes before a marker are tolerated (libjpeg warns and goes on).
        while i < n && bytes[i] != 0xFF {
            i += 1;
        }
        while i < n && bytes[i] == 0xFF {
            i += 1;
        }
        if i >= n {
            return Err(cut(format!(
                "its {n} bytes end before the end-of-image marker"
            )));
        }
        let marker = bytes[i];
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            0xD0..=0xD7 | 0x01 => continue, // no length field
            _ => {}
        }
        if i + 2 > n {
            return Err(cut(format!(
                "segment 0xFF{marker:02X} at byte {} has no length",
                i - 2
            )));
        }
        let len = u16::from_be_bytes([bytes[i], bytes[i + 1]]) as usize;
        if len < 2 || i + len > n {
            return Err(cut(format!(
                "segment 0xFF{marker:02X} at byte {} claims {len} bytes, {} remain",
                i - 2,
                n - i
            )));
        }
        i += len;
        if marker == 0xDA {
            // Entropy-coded data: runs until a marker other than a stuffed 0xFF00 or a restart.
            loop {
                while i < n && bytes[i] != 0xFF {
                    i += 1;
                }
                if i + 1 >= n {
                    return Err(cut(format!(
                        "its {n} bytes end inside the entropy-coded data of a scan"
                    )));
                }
                match bytes[i + 1] {
                    0x00 | 0xD0..=0xD7 | 0xFF => i += if bytes[i + 1] == 0xFF { 1 } else { 2 },
                    _ => break,
                }
            }
        }
    }
}
