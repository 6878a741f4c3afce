//! PNG previews: grids of 2D slices, for a look at samples without a NIfTI viewer.
//!
//! Values are mapped from [0, 1] to 8-bit grey (clamped; NaN is black), tiles are laid out in
//! rows of `columns`, separated by a 2-pixel black border. Rows of the image are the slice's
//! height axis from top to bottom, as viewers show an axial slice with the array's first row on
//! top.

use std::io::BufWriter;
use std::path::Path;

/// Pixels between tiles.
const BORDER: usize = 2;

/// One grey tile: `height × width` values, row-major.
pub struct Tile<'a> {
    pub height: usize,
    pub width: usize,
    pub values: &'a [f32],
}

/// Writes `tiles` as one PNG, `columns` tiles per row; every tile must have the same size.
pub fn write_grid(path: &Path, tiles: &[Tile<'_>], columns: usize) -> Result<(), String> {
    let Some(first) = tiles.first() else { return Err("a preview needs at least one tile".into()) };
    let (th, tw) = (first.height, first.width);
    if let Some(bad) = tiles.iter().find(|t| (t.height, t.width) != (th, tw) || t.values.len() != th * tw) {
        return Err(format!("preview tiles differ in size: {}x{} and {}x{}", th, tw, bad.height, bad.width));
    }
    let columns = columns.clamp(1, tiles.len());
    let rows = tiles.len().div_ceil(columns);
    let width = columns * tw + (columns + 1) * BORDER;
    let height = rows * th + (rows + 1) * BORDER;
    let mut pixels = vec![0u8; width * height];
    for (i, tile) in tiles.iter().enumerate() {
        let (x0, y0) = (BORDER + (i % columns) * (tw + BORDER), BORDER + (i / columns) * (th + BORDER));
        for y in 0..th {
            for x in 0..tw {
                pixels[(y0 + y) * width + x0 + x] = grey(tile.values[y * tw + x]);
            }
        }
    }
    let file = std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), width as u32, height as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| format!("{}: {e}", path.display()))?;
    writer.write_image_data(&pixels).map_err(|e| format!("{}: {e}", path.display()))?;
    writer.finish().map_err(|e| format!("{}: {e}", path.display()))
}

fn grey(v: f32) -> u8 {
    if v.is_nan() {
        0
    } else {
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grid_decodes_to_its_tiles() {
        let dir = std::env::temp_dir().join(format!("medgen-preview-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grid.png");
        let a = [0.0, 1.0, 0.5, f32::NAN];
        let b = [2.0, -1.0, 0.25, 0.75];
        let tiles = [Tile { height: 2, width: 2, values: &a }, Tile { height: 2, width: 2, values: &b }];
        write_grid(&path, &tiles, 2).unwrap();
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (2 * 2 + 3 * BORDER as u32, 2 + 2 * BORDER as u32));
        let at = |x: usize, y: usize| buf[y * info.width as usize + x];
        assert_eq!([at(2, 2), at(3, 2), at(2, 3), at(3, 3)], [0, 255, 128, 0]);
        assert_eq!([at(6, 2), at(7, 2), at(6, 3), at(7, 3)], [255, 0, 64, 191]);
        assert_eq!(at(0, 0), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
