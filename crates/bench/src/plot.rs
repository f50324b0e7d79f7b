//! Line charts drawn into PNG files by hand: a raster, straight lines, an 8×8 bitmap font.
//! Enough for a convergence curve and a latency CDF, with no font or plotting library.

use std::path::Path;

use anyhow::Result;
use font8x8::UnicodeFonts;

/// An RGB colour.
pub type Rgb = [u8; 3];

/// Colours of the series, in order.
pub const PALETTE: [Rgb; 4] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [148, 103, 189],
];

const WIDTH: usize = 800;
const HEIGHT: usize = 500;
const LEFT: usize = 80;
const RIGHT: usize = 30;
const TOP: usize = 50;
const BOTTOM: usize = 60;
const WHITE: Rgb = [255, 255, 255];
const INK: Rgb = [40, 40, 40];
const GRID: Rgb = [225, 225, 225];

/// One line of a chart.
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Points in data coordinates.
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed (for reference lines such as a floor).
    pub dashed: bool,
}

/// A chart: title, axis labels and its series.
pub struct Chart {
    /// Shown at the top.
    pub title: String,
    /// Below the x axis.
    pub x_label: String,
    /// Above the y axis.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

struct Canvas {
    pixels: Vec<Rgb>,
}

impl Canvas {
    fn new() -> Self {
        Self {
            pixels: vec![WHITE; WIDTH * HEIGHT],
        }
    }

    fn set(&mut self, x: i64, y: i64, colour: Rgb) {
        if (0..WIDTH as i64).contains(&x) && (0..HEIGHT as i64).contains(&y) {
            self.pixels[y as usize * WIDTH + x as usize] = colour;
        }
    }

    /// Bresenham's line, `width` pixels thick; every `dash`-th run of pixels is skipped.
    fn line(&mut self, from: (i64, i64), to: (i64, i64), colour: Rgb, width: i64, dash: bool) {
        let (mut x, mut y) = from;
        let (dx, dy) = ((to.0 - x).abs(), -(to.1 - y).abs());
        let (sx, sy) = (if x < to.0 { 1 } else { -1 }, if y < to.1 { 1 } else { -1 });
        let mut error = dx + dy;
        let mut step = 0;
        loop {
            if !dash || (step / 6) % 2 == 0 {
                for ox in 0..width {
                    for oy in 0..width {
                        self.set(x + ox - width / 2, y + oy - width / 2, colour);
                    }
                }
            }
            step += 1;
            if (x, y) == to {
                break;
            }
            let doubled = 2 * error;
            if doubled >= dy {
                error += dy;
                x += sx;
            }
            if doubled <= dx {
                error += dx;
                y += sy;
            }
        }
    }

    fn text(&mut self, x: i64, y: i64, text: &str, colour: Rgb) {
        for (i, c) in text.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS.get(c).unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.set(x + i as i64 * 8 + col, y + row as i64, colour);
                    }
                }
            }
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut encoder = png::Encoder::new(file, WIDTH as u32, HEIGHT as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.pixels.concat())?;
        Ok(())
    }
}

/// A round step for about five ticks over `span`.
fn tick_step(span: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let rough = span / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * magnitude)
}

fn tick_label(value: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{value:.0}")
    } else if step >= 0.1 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

impl Chart {
    /// Draws the chart and writes it as a PNG file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let points = self.series.iter().flat_map(|s| s.points.iter());
        let (x_max, y_max) = points.fold((0f64, 0f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
        let (x_step, y_step) = (tick_step(x_max), tick_step(y_max));
        let x_max = (x_max / x_step).ceil().max(1.0) * x_step;
        let y_max = (y_max / y_step).ceil().max(1.0) * y_step;
        let plot_w = (WIDTH - LEFT - RIGHT) as f64;
        let plot_h = (HEIGHT - TOP - BOTTOM) as f64;
        let to_px = |(x, y): (f64, f64)| {
            (
                LEFT as i64 + (x / x_max * plot_w).round() as i64,
                (HEIGHT - BOTTOM) as i64 - (y / y_max * plot_h).round() as i64,
            )
        };

        let mut canvas = Canvas::new();
        let (left, right) = (LEFT as i64, (WIDTH - RIGHT) as i64);
        let (top, bottom) = (TOP as i64, (HEIGHT - BOTTOM) as i64);
        let mut tick = 0.0;
        while tick <= x_max + x_step / 2.0 {
            let (px, _) = to_px((tick, 0.0));
            canvas.line((px, top), (px, bottom), GRID, 1, false);
            let label = tick_label(tick, x_step);
            canvas.text(px - label.len() as i64 * 4, bottom + 8, &label, INK);
            tick += x_step;
        }
        let mut tick = 0.0;
        while tick <= y_max + y_step / 2.0 {
            let (_, py) = to_px((0.0, tick));
            canvas.line((left, py), (right, py), GRID, 1, false);
            let label = tick_label(tick, y_step);
            canvas.text(left - 8 - label.len() as i64 * 8, py - 4, &label, INK);
            tick += y_step;
        }
        canvas.line((left, top), (left, bottom), INK, 1, false);
        canvas.line((left, bottom), (right, bottom), INK, 1, false);
        canvas.text(left, 16, &self.title, INK);
        canvas.text(left, 30, &self.y_label, INK);
        let x_label_at = (WIDTH as i64 - self.x_label.len() as i64 * 8) / 2;
        canvas.text(x_label_at, bottom + 28, &self.x_label, INK);

        for (i, series) in self.series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let pixels: Vec<(i64, i64)> = series.points.iter().map(|p| to_px(*p)).collect();
            for pair in pixels.windows(2) {
                canvas.line(pair[0], pair[1], colour, 2, series.dashed);
            }
            let legend_y = top + 8 + i as i64 * 14;
            canvas.line(
                (left + 12, legend_y + 4),
                (left + 32, legend_y + 4),
                colour,
                2,
                series.dashed,
            );
            canvas.text(left + 38, legend_y, &series.label, INK);
        }
        canvas.save(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(10.0), 2.0);
        assert_eq!(tick_step(1000.0), 200.0);
        assert_eq!(tick_step(0.3), 0.1);
        assert_eq!(tick_step(0.0), 1.0);
    }

    #[test]
    fn a_chart_is_a_png_with_its_lines_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        Chart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series {
                label: "line".into(),
                points: vec![(0.0, 0.0), (10.0, 10.0)],
                dashed: false,
            }],
        }
        .save(&path)
        .unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buffer).unwrap();
        assert_eq!((info.width, info.height), (WIDTH as u32, HEIGHT as u32));
        let blue = buffer.chunks(3).filter(|p| *p == PALETTE[0]).count();
        assert!(blue > 500, "the series is drawn ({blue} pixels)");
    }
}
