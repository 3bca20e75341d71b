//! Percentile-distribution text (`.hgrm`) as `HdrHistogram`'s Java
//! `outputPercentileDistribution` prints it, so its plotter and other tools read our files.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use hdrhistogram::Histogram;

use crate::{Error, Result};

/// Percentile rows per halving of the distance to 100%, as `HdrHistogram`'s tools default to.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The unit a `.hgrm` file shows values in. Histograms hold microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Micros,
    Millis,
}

impl Unit {
    /// What recorded values (µs) are divided by to show them in this unit.
    pub fn scaling_ratio(self) -> f64 {
        match self {
            Unit::Micros => 1.0,
            Unit::Millis => 1000.0,
        }
    }
}

/// The percentile distribution of `histogram` (values in µs) in `unit`.
pub fn render(histogram: &Histogram<u64>, unit: Unit) -> String {
    render_scaled(histogram, unit.scaling_ratio())
}

/// The percentile distribution of `histogram`, each value divided by `scaling_ratio`.
pub fn render_scaled(histogram: &Histogram<u64>, scaling_ratio: f64) -> String {
    let digits = usize::from(histogram.sigfig());
    let mut out = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    // `fmt::Write` for a `String` never fails, hence the ignored results below.
    for row in rows(histogram, TICKS_PER_HALF_DISTANCE) {
        let value = fixed(row.value as f64 / scaling_ratio, digits);
        let quantile = row.percentile / 100.0;
        let (total, percentile) = (row.total, fixed(quantile, 12));
        if row.percentile < 100.0 {
            let inverse = fixed(1.0 / (1.0 - quantile), 2);
            let _ = writeln!(out, "{value:>12} {percentile:>2} {total:>10} {inverse:>14}");
        } else {
            let _ = writeln!(out, "{value:>12} {percentile:>2} {total:>10}");
        }
    }
    let (mean, stdev) = mean_and_deviation(histogram);
    let mean = fixed(mean / scaling_ratio, digits);
    let stdev = fixed(stdev / scaling_ratio, digits);
    let max = fixed(histogram.max() as f64 / scaling_ratio, digits);
    let _ = writeln!(out, "#[Mean    = {mean:>12}, StdDeviation   = {stdev:>12}]");
    let _ = writeln!(
        out,
        "#[Max     = {max:>12}, Total count    = {:>12}]",
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        histogram.buckets(),
        sub_bucket_count(histogram)
    );
    out
}

/// Writes the percentile distribution of `histogram` (values in µs) in `unit` to `path`.
pub fn write(path: &Path, histogram: &Histogram<u64>, unit: Unit) -> Result<()> {
    fs::write(path, render(histogram, unit)).map_err(|source| Error::Io {
        op: "writing",
        path: path.to_owned(),
        source,
    })
}

/// One line of the distribution: the highest value equivalent to a recorded one, the
/// percentile level (0 to 100) the iteration reached there, and the count up to that value.
struct Row {
    value: u64,
    percentile: f64,
    total: u64,
}

/// The rows of Java's `PercentileIterator`. `hdrhistogram`'s `iter_quantiles` steps the same
/// way but in quantiles, where float sums (0.1 + 0.1 + 0.1 > 0.3) skip rows Java prints, so
/// this steps in percent as Java does.
fn rows(histogram: &Histogram<u64>, ticks_per_half_distance: u32) -> Vec<Row> {
    let count = histogram.len();
    let mut rows = Vec::new();
    let mut level = 0.0_f64;
    let mut total = 0_u64;
    for step in histogram.iter_recorded() {
        total += step.count_at_value();
        let value = step.value_iterated_to();
        let percentile = 100.0 * total as f64 / count as f64;
        while percentile >= level {
            rows.push(Row {
                value,
                percentile: level,
                total,
            });
            if total == count {
                // Java's last step: straight to 100% once the last value is reached.
                rows.push(Row {
                    value,
                    percentile: 100.0,
                    total,
                });
                return rows;
            }
            level = next_level(level, ticks_per_half_distance);
        }
    }
    rows
}

/// The next percentile level: fixed steps within each halving of the distance to 100%,
/// `ticks_per_half_distance` steps per half.
fn next_level(level: f64, ticks_per_half_distance: u32) -> f64 {
    // Java's formula, `ln / ln 2` included, so levels land on the same doubles.
    let halvings = ((100.0 / (100.0 - level)).ln() / 2_f64.ln()).floor();
    let ticks = f64::from(ticks_per_half_distance) * 2_f64.powf(halvings + 1.0);
    let next = level + 100.0 / ticks;
    // A step too small to change the level (counts past 10^15) would never end.
    if next > level { next } else { 100.0 }
}

/// Mean and standard deviation summed as Java sums them (`hdrhistogram`'s `mean` divides
/// each term first), so the footer matches to the last digit.
fn mean_and_deviation(histogram: &Histogram<u64>) -> (f64, f64) {
    if histogram.is_empty() {
        return (0.0, 0.0);
    }
    let count = histogram.len() as f64;
    let median = |value| histogram.median_equivalent(value) as f64;
    let total: f64 = histogram
        .iter_recorded()
        .map(|step| median(step.value_iterated_to()) * step.count_at_value() as f64)
        .sum();
    let mean = total / count;
    let squares: f64 = histogram
        .iter_recorded()
        .map(|step| {
            let deviation = median(step.value_iterated_to()) - mean;
            deviation * deviation * step.count_at_value() as f64
        })
        .sum();
    (mean, (squares / count).sqrt())
}

/// `x` with `decimals` decimals as Java's `%.Nf` prints it: the shortest decimal that reads
/// back as `x`, rounded half up. (Rust rounds the exact binary value, so 0.0625 would print
/// as 0.062 where Java prints 0.063.)
fn fixed(x: f64, decimals: usize) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    // Shortest round-trip digits and exponent: 9.9978e-1 → "99978", point after 0 digits.
    let scientific = format!("{:e}", x.abs());
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("`{:e}` output has an exponent");
    let exponent: i64 = exponent.parse().expect("`{:e}` exponent is an integer");
    let shortest: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    // Digits of |x| with the point after `point` of them (a leading 0 for |x| < 1), padded to
    // `decimals` + 1 decimals.
    let lead = usize::try_from(-exponent).unwrap_or(0);
    let mut digits: Vec<u8> = std::iter::repeat_n(b'0', lead).chain(shortest).collect();
    let point = usize::try_from(exponent + 1).unwrap_or(0).max(1);
    digits.resize(digits.len().max(point + decimals + 1), b'0');
    let round_up = digits[point + decimals] >= b'5';
    digits.truncate(point + decimals);
    if round_up {
        carry(&mut digits);
    }
    let split = digits.len() - decimals;
    let (int, frac) = digits.split_at(split);
    let sign = if x < 0.0 && digits.iter().any(|d| *d != b'0') {
        "-"
    } else {
        ""
    };
    let int = String::from_utf8_lossy(int);
    let frac = String::from_utf8_lossy(frac);
    if decimals == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// Adds one to the decimal number in `digits`, growing it by a digit on overflow.
fn carry(digits: &mut Vec<u8>) {
    for digit in digits.iter_mut().rev() {
        if *digit == b'9' {
            *digit = b'0';
        } else {
            *digit += 1;
            return;
        }
    }
    digits.insert(0, b'1');
}

/// The histogram's sub-bucket count, which `hdrhistogram` does not expose: its counts array
/// holds `(buckets + 1) * sub_buckets / 2` entries.
fn sub_bucket_count(histogram: &Histogram<u64>) -> usize {
    2 * histogram.distinct_values() / (usize::from(histogram.buckets()) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values 1, 2, 3, 4 µs once each, and 100 µs six times: ten values.
    fn small() -> Histogram<u64> {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for value in [1, 2, 3, 4] {
            histogram.record(value).unwrap();
        }
        histogram.record_n(100, 6).unwrap();
        histogram
    }

    /// Checked by hand: 5 ticks per half distance step the percentile by 10% up to 50%, then
    /// by 5% to 75%, 2.5% to 87.5% and so on; each row shows the smallest value whose
    /// cumulative count reaches the row's percentile (value 1 holds 10%, so it shows at 0% and
    /// 10%). Once the last value is reached, at 50% here, the iteration jumps to 100%.
    /// Mean 610 / 10; deviation sqrt((60² + 59² + 58² + 57² + 6 × 39²) / 10) = 47.770.
    #[test]
    fn small_histogram_rows() {
        let text = render(&small(), Unit::Micros);
        let expected = "       Value     Percentile TotalCount 1/(1-Percentile)

       1.000 0.000000000000          1           1.00
       1.000 0.100000000000          1           1.11
       2.000 0.200000000000          2           1.25
       3.000 0.300000000000          3           1.43
       4.000 0.400000000000          4           1.67
     100.000 0.500000000000         10           2.00
     100.000 1.000000000000         10
#[Mean    =       61.000, StdDeviation   =       47.770]
#[Max     =      100.000, Total count    =           10]
#[Buckets =           22, SubBuckets     =         2048]
";
        assert_eq!(text, expected, "\n{text}");
    }

    /// Histograms encoded by `HdrHistogram` 2.1.11 (Java) and its `outputPercentileDistribution(
    /// out, 5, ratio)` text for them: ours must be the same to the byte.
    #[test]
    fn same_text_as_java() {
        let fixtures = [
            (
                include_str!("../tests/fixtures/hgrm/outlier.b64"),
                include_str!("../tests/fixtures/hgrm/outlier.us.hgrm"),
                include_str!("../tests/fixtures/hgrm/outlier.ms.hgrm"),
            ),
            (
                include_str!("../tests/fixtures/hgrm/tail.b64"),
                include_str!("../tests/fixtures/hgrm/tail.us.hgrm"),
                include_str!("../tests/fixtures/hgrm/tail.ms.hgrm"),
            ),
        ];
        for (encoded, micros, millis) in fixtures {
            let histogram = crate::summary::decode_histogram(encoded).unwrap();
            assert_eq!(render(&histogram, Unit::Micros), micros);
            assert_eq!(render(&histogram, Unit::Millis), millis);
        }
    }

    #[test]
    fn fixed_rounds_like_java() {
        assert_eq!(fixed(0.0625, 3), "0.063");
        assert_eq!(fixed(0.999_780_273_437_5, 12), "0.999780273438");
        assert_eq!(fixed(61.0, 3), "61.000");
        assert_eq!(fixed(0.0, 12), "0.000000000000");
        assert_eq!(fixed(1.0, 12), "1.000000000000");
        assert_eq!(fixed(9.9996, 3), "10.000");
        assert_eq!(fixed(999.9996, 3), "1000.000");
        assert_eq!(fixed(1.111_111, 2), "1.11");
        assert_eq!(fixed(0.000_4, 3), "0.000");
        assert_eq!(fixed(0.000_5, 3), "0.001");
        assert_eq!(fixed(123_456_789.0, 0), "123456789");
        assert_eq!(fixed(1e21, 1), "1000000000000000000000.0");
        assert_eq!(fixed(-2.5, 0), "-3");
        assert_eq!(fixed(-0.0001, 2), "0.00");
    }

    #[test]
    fn millis_divide_by_a_thousand() {
        let text = render(&small(), Unit::Millis);
        assert!(text.contains("\n       0.100 0.500000000000         10           2.00\n"));
        assert!(text.contains("#[Max     =        0.100, Total count    =           10]"));
    }

    /// Every row has a value, an ascending percentile ending at exactly 1.0, a cumulative
    /// count that never falls and ends at the total, and `1/(1-p)` where p < 1.
    #[test]
    fn large_histogram_parses() {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for i in 1..=100_000_u64 {
            histogram.record(i * i % 1_000_003 + 1).unwrap();
        }
        let text = render(&histogram, Unit::Millis);
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("       Value     Percentile TotalCount 1/(1-Percentile)")
        );
        assert_eq!(lines.next(), Some(""));
        let rows: Vec<Vec<f64>> = lines
            .by_ref()
            .take_while(|line| !line.starts_with('#'))
            .map(|line| {
                line.split_whitespace()
                    .map(|field| field.parse().unwrap())
                    .collect()
            })
            .collect();
        assert!(rows.len() > 50, "{} rows", rows.len());
        for pair in rows.windows(2) {
            assert!(pair[0][1] <= pair[1][1], "{pair:?}");
            assert!(pair[0][0] <= pair[1][0], "{pair:?}");
            assert!(pair[0][2] <= pair[1][2], "{pair:?}");
        }
        let (last, rest) = rows.split_last().unwrap();
        assert_eq!(last.len(), 3);
        assert!((last[1] - 1.0).abs() < f64::EPSILON);
        assert!((last[2] - 100_000.0).abs() < f64::EPSILON);
        for row in rest {
            assert_eq!(row.len(), 4, "{row:?}");
            assert!(
                (row[3] - 1.0 / (1.0 - row[1])).abs() < 0.01 * row[3],
                "{row:?}"
            );
        }
        assert!(text.ends_with("SubBuckets     =         2048]\n"), "{text}");
    }

    #[test]
    fn empty_histogram_has_header_and_footer() {
        let text = render(&Histogram::<u64>::new(3).unwrap(), Unit::Micros);
        assert_eq!(text.lines().filter(|l| l.starts_with("#[")).count(), 3);
        assert!(text.contains("Total count    =            0]"));
    }

    #[test]
    fn write_names_the_path_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("x.hgrm");
        let err = write(&path, &small(), Unit::Micros).unwrap_err();
        assert!(err.to_string().contains("no-such-dir"), "{err}");
        let ok = dir.path().join("x.hgrm");
        write(&ok, &small(), Unit::Micros).unwrap();
        assert_eq!(
            fs::read_to_string(ok).unwrap(),
            render(&small(), Unit::Micros)
        );
    }
}
