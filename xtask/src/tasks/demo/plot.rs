//! The recording of `cargo xtask demo --plot` as one SVG picture: packets per second
//! offered to the protected host, passed by the guard and dropped by reason, with the
//! demo's steps marked, and below it the bystander's pings, sent and answered.
//!
//! Rates come from cumulative counters: between two consecutive samples, the difference
//! divided by the time between them, drawn as a step over that interval. No smoothing, so
//! a flood starts where its step starts, and a lone packet shows as a short dash (one
//! packet in a quarter of a second: 4 packets per second). The SVG backend writes `<text>`
//! elements in a generic `sans-serif` family, so the picture needs no font file.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use plotters::{
    coord::{Shift, types::RangedCoordf64},
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::record::{Recording, Sample};
use crate::util::numbers::thousands;

/// The bottom of the packets-per-second axis; a rate of zero is not drawn.
const FLOOR: f64 = 0.5;

const WIDTH: u32 = 1200;
/// The charts' height; the title and caption come on top.
const CHARTS_HEIGHT: u32 = 690;
const LEGEND: u32 = 290;
const RATES_HEIGHT: u32 = 450;
const CAPTION_LINE: u32 = 19;

const OFFERED: RGBColor = RGBColor(120, 120, 120);
const PASSED: RGBColor = RGBColor(0, 140, 70);
const UNANSWERED: RGBColor = RGBColor(210, 30, 30);
const TEXT: RGBColor = RGBColor(30, 30, 30);
const SHADE: RGBColor = RGBColor(236, 239, 248);

/// The colour of a drop reason: the known ones fixed, so pictures can be compared.
fn reason_color(reason: &str, index: usize) -> RGBColor {
    match reason {
        "rate_limit" => RGBColor(235, 120, 0),
        "invalid" => RGBColor(200, 30, 30),
        "smurf" => RGBColor(140, 60, 170),
        "policy" => RGBColor(30, 100, 200),
        "deny_list" => RGBColor(130, 85, 40),
        "malformed" => RGBColor(220, 80, 150),
        "oversize" => RGBColor(60, 160, 60),
        "blocked" => RGBColor(60, 60, 60),
        _ => [
            RGBColor(0, 150, 160),
            RGBColor(150, 150, 0),
            RGBColor(90, 90, 200),
        ][index % 3],
    }
}

/// A counter's rate between two consecutive samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub from: f64,
    pub to: f64,
    /// Packets per second.
    pub rate: f64,
}

/// The rate of the counter `value` in each interval between consecutive samples. A counter
/// that went down (it cannot, unless the guard was reloaded) counts as zero.
pub fn rates(samples: &[Sample], value: impl Fn(&Sample) -> u64) -> Vec<Interval> {
    samples
        .windows(2)
        .filter(|pair| pair[1].at > pair[0].at)
        .map(|pair| {
            let packets = value(&pair[1]).saturating_sub(value(&pair[0]));
            #[expect(
                clippy::cast_precision_loss,
                reason = "packet counts stay far below 2^52"
            )]
            let rate = packets as f64 / (pair[1].at - pair[0].at);
            Interval {
                from: pair[0].at,
                to: pair[1].at,
                rate,
            }
        })
        .collect()
}

/// The steps of `intervals` as lines: one line through each run of non-zero rates, none
/// where the rate is zero (a log axis has no zero).
pub fn step_lines(intervals: &[Interval]) -> Vec<Vec<(f64, f64)>> {
    intervals
        .split(|interval| interval.rate <= 0.0)
        .filter(|run| !run.is_empty())
        .map(|run| {
            run.iter()
                .flat_map(|interval| [(interval.from, interval.rate), (interval.to, interval.rate)])
                .collect()
        })
        .collect()
}

/// A step of the demo and what its counters did during it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Phase {
    pub label: String,
    pub from: f64,
    pub to: f64,
    pub offered: u64,
    pub passed: u64,
    pub dropped: BTreeMap<String, u64>,
    pub pings_sent: u64,
    pub pings_answered: u64,
}

/// One phase per mark, from it to the next (the last one to the end of the recording),
/// with the counters' growth between the last samples at or before either end.
pub fn phases(recording: &Recording) -> Vec<Phase> {
    let samples = &recording.samples;
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Vec::new();
    };
    let at = |time: f64| {
        samples
            .iter()
            .take_while(|sample| sample.at <= time)
            .last()
            .unwrap_or(first)
    };
    let marks = &recording.marks;
    marks
        .iter()
        .enumerate()
        .map(|(index, mark)| {
            let to = marks.get(index + 1).map_or(last.at, |next| next.at);
            let (before, after) = (at(mark.at), at(to));
            let grew = |value: &dyn Fn(&Sample) -> u64| value(after).saturating_sub(value(before));
            let dropped = after
                .dropped
                .iter()
                .map(|(reason, count)| {
                    let earlier = before.dropped.get(reason).copied().unwrap_or(0);
                    (reason.clone(), count.saturating_sub(earlier))
                })
                .collect();
            Phase {
                label: mark.label.clone(),
                from: mark.at,
                to,
                offered: grew(&|sample| sample.offered),
                passed: grew(&|sample| sample.passed),
                dropped,
                pings_sent: grew(&|sample| sample.pings_sent),
                pings_answered: grew(&|sample| sample.pings_answered),
            }
        })
        .collect()
}

/// The drop reasons that dropped anything, in the order of the counters.
fn reasons(samples: &[Sample]) -> Vec<String> {
    samples
        .last()
        .map(|last| {
            last.dropped
                .iter()
                .filter(|(_, count)| **count > 0)
                .map(|(reason, _)| reason.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// A counter of a sample.
type Counter = Box<dyn Fn(&Sample) -> u64>;

/// How much `value` grew over the whole recording.
fn growth(samples: &[Sample], value: impl Fn(&Sample) -> u64) -> u64 {
    match (samples.first(), samples.last()) {
        (Some(first), Some(last)) => value(last).saturating_sub(value(first)),
        _ => 0,
    }
}

/// How a legend entry is drawn.
enum Swatch {
    Area(RGBColor),
    Line(RGBColor, u32),
}

/// The SVG of `recording`: `title` in bold above the `caption` lines, then the rates and
/// the bystander's pings.
pub fn draw(recording: &Recording, title: &str, caption: &[String]) -> Result<String> {
    let mut svg = String::new();
    let header = 50 + CAPTION_LINE * u32::try_from(caption.len()).unwrap_or(0);
    draw_on(
        SVGBackend::with_string(&mut svg, (WIDTH, header + CHARTS_HEIGHT)).into_drawing_area(),
        header,
        recording,
        title,
        caption,
    )
    .map_err(|err| anyhow!("drawing the plot: {err}"))?;
    Ok(svg)
}

type Drawn<'a> =
    std::result::Result<(), DrawingAreaErrorKind<<SVGBackend<'a> as DrawingBackend>::ErrorType>>;

fn draw_on<'a>(
    root: DrawingArea<SVGBackend<'a>, Shift>,
    header_height: u32,
    recording: &Recording,
    title: &str,
    caption: &[String],
) -> Drawn<'a> {
    root.fill(&WHITE)?;
    let samples = &recording.samples;
    let end = samples.last().map_or(1.0, |last| last.at).max(1.0);
    let phases = phases(recording);

    let (header, body) = root.split_vertically(header_height);
    header.draw(&Text::new(
        title.to_owned(),
        (20, 12),
        font(24, FontStyle::Bold),
    ))?;
    for (index, line) in caption.iter().enumerate() {
        header.draw(&Text::new(
            line.clone(),
            (
                20,
                46 + i32::try_from(CAPTION_LINE as usize * index).unwrap_or(0),
            ),
            font(14, FontStyle::Normal),
        ))?;
    }

    let (charts, legend) = body.split_horizontally(WIDTH - LEGEND);
    let (top, bottom) = charts.split_vertically(RATES_HEIGHT);
    let (top_legend, bottom_legend) = legend.split_vertically(RATES_HEIGHT);

    // Packets per second, on a log axis: floods and single pings in one picture.
    let offered = rates(samples, |sample| sample.offered);
    let highest = offered
        .iter()
        .map(|interval| interval.rate)
        .fold(10.0, f64::max);
    let ceiling = 10f64.powf((highest * 3.0).log10().ceil());
    let mut chart = ChartBuilder::on(&top)
        .margin_left(10)
        .margin_right(10)
        .margin_top(10)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..end, (FLOOR..ceiling).log_scale())?;
    shade_phases(&mut chart, &phases, FLOOR, ceiling)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE.mix(0.0))
        .y_desc("packets per second (log scale)")
        .x_desc("seconds since icmp-guard was attached")
        .y_label_formatter(&|rate| per_second(*rate))
        .x_label_formatter(&|seconds| seconds_label(*seconds))
        .label_style(font(13, FontStyle::Normal))
        .axis_desc_style(font(14, FontStyle::Normal))
        .draw()?;
    for (index, phase) in phases.iter().enumerate() {
        // Two rows of labels, so short neighbouring steps do not overwrite each other.
        let row = if index % 2 == 0 { 0.6 } else { 0.2 };
        chart.draw_series([Text::new(
            phase.label.clone(),
            ((phase.from + phase.to) / 2.0, ceiling * row),
            font(14, FontStyle::Bold).pos(Pos::new(HPos::Center, VPos::Top)),
        )])?;
    }
    chart.draw_series(
        AreaSeries::new(
            offered.iter().flat_map(|interval| {
                let rate = interval.rate.max(FLOOR);
                [(interval.from, rate), (interval.to, rate)]
            }),
            FLOOR,
            OFFERED.mix(0.3),
        )
        .border_style(OFFERED.stroke_width(1)),
    )?;
    let mut entries = vec![(
        Swatch::Area(OFFERED),
        format!(
            "offered: reached eth0 ({})",
            thousands(growth(samples, |sample| sample.offered))
        ),
    )];
    let mut lines: Vec<(RGBColor, String, Counter)> = vec![(
        PASSED,
        "passed".to_owned(),
        Box::new(|sample| sample.passed),
    )];
    for (index, reason) in reasons(samples).into_iter().enumerate() {
        let (color, label) = (reason_color(&reason, index), format!("dropped: {reason}"));
        let value = move |sample: &Sample| sample.dropped.get(&reason).copied().unwrap_or(0);
        lines.push((color, label, Box::new(value)));
    }
    for (color, label, value) in &lines {
        for run in step_lines(&rates(samples, value)) {
            chart.draw_series(LineSeries::new(run, color.stroke_width(2)))?;
        }
        entries.push((
            Swatch::Line(*color, 2),
            format!("{label} ({})", thousands(growth(samples, value))),
        ));
    }
    draw_legend(&top_legend, "packets (over the whole run)", &entries)?;

    // The bystander's pings, counted by its own stack.
    let first = samples.first().cloned().unwrap_or_default();
    let cumulative = |value: fn(&Sample) -> u64| -> Vec<(f64, f64)> {
        samples
            .iter()
            .map(|sample| {
                let count = value(sample).saturating_sub(value(&first));
                #[expect(clippy::cast_precision_loss, reason = "a few dozen pings")]
                (sample.at, count as f64)
            })
            .collect()
    };
    let sent = cumulative(|sample| sample.pings_sent);
    let answered = cumulative(|sample| sample.pings_answered);
    // A ping is in flight for well under a millisecond: a difference that lasts is a loss.
    let unanswered: Vec<(f64, f64)> = sent
        .iter()
        .zip(&answered)
        .map(|(&(at, sent), &(_, answered))| (at, (sent - answered).max(0.0)))
        .collect();
    let top_count = (sent.iter().map(|(_, count)| *count).fold(1.0, f64::max) * 1.1).ceil();
    let mut chart = ChartBuilder::on(&bottom)
        .margin_left(10)
        .margin_right(10)
        .margin_top(10)
        .margin_bottom(10)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..end, 0.0..top_count)?;
    shade_phases(&mut chart, &phases, 0.0, top_count)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE.mix(0.0))
        .y_labels(5)
        .y_desc("bystander's pings")
        .x_desc("seconds since icmp-guard was attached")
        .x_label_formatter(&|seconds| seconds_label(*seconds))
        .y_label_formatter(&|count| format!("{count:.0}"))
        .label_style(font(13, FontStyle::Normal))
        .axis_desc_style(font(14, FontStyle::Normal))
        .draw()?;
    chart.draw_series(LineSeries::new(sent, OFFERED.mix(0.5).stroke_width(7)))?;
    chart.draw_series(LineSeries::new(answered, PASSED.stroke_width(2)))?;
    chart.draw_series(LineSeries::new(unanswered, UNANSWERED.stroke_width(2)))?;
    let sent_total = growth(samples, |sample| sample.pings_sent);
    let answered_total = growth(samples, |sample| sample.pings_answered);
    draw_legend(
        &bottom_legend,
        "the bystander's stack counted",
        &[
            (
                Swatch::Line(OFFERED, 7),
                format!("sent, one a second ({})", thousands(sent_total)),
            ),
            (
                Swatch::Line(PASSED, 2),
                format!("answered ({})", thousands(answered_total)),
            ),
            (
                Swatch::Line(UNANSWERED, 2),
                format!(
                    "unanswered ({})",
                    thousands(sent_total.saturating_sub(answered_total))
                ),
            ),
        ],
    )?;
    let (_, height) = bottom_legend.dim_in_pixel();
    bottom_legend.draw(&Text::new(
        "drawn by: sudo cargo xtask demo --plot",
        (8, i32::try_from(height).unwrap_or(0) - 40),
        font(13, FontStyle::Italic).color(&OFFERED),
    ))?;
    root.present()
}

/// Every other phase on a tinted background, under the grid and the data.
fn shade_phases<'a, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    phases: &[Phase],
    bottom: f64,
    top: f64,
) -> Drawn<'a> {
    let shaded = phases.iter().skip(1).step_by(2);
    chart.draw_series(
        shaded.map(|phase| Rectangle::new([(phase.from, bottom), (phase.to, top)], SHADE.filled())),
    )?;
    Ok(())
}

/// The text style of `pixels` high letters (plotters writes 1/1.24 of the size it is given).
fn font(pixels: u32, style: FontStyle) -> TextStyle<'static> {
    ("sans-serif", f64::from(pixels) * 1.24)
        .into_font()
        .style(style)
        .color(&TEXT)
}

/// Seconds on the time axis: whole ones without a decimal point.
fn seconds_label(seconds: f64) -> String {
    format!("{}", (seconds * 10.0).round() / 10.0)
}

/// A legend in its own column beside a chart: a swatch and a label per line.
fn draw_legend<'a>(
    area: &DrawingArea<SVGBackend<'a>, Shift>,
    heading: &str,
    entries: &[(Swatch, String)],
) -> Drawn<'a> {
    area.draw(&Text::new(
        heading.to_owned(),
        (8, 14),
        font(14, FontStyle::Italic),
    ))?;
    for (index, (swatch, label)) in entries.iter().enumerate() {
        let y = 46 + 24 * i32::try_from(index).unwrap_or(0);
        match swatch {
            Swatch::Area(color) => area.draw(&Rectangle::new(
                [(8, y - 7), (36, y + 7)],
                color.mix(0.3).filled(),
            ))?,
            Swatch::Line(color, width) => area.draw(&PathElement::new(
                [(8, y), (36, y)],
                color
                    .mix(if *width > 2 { 0.5 } else { 1.0 })
                    .stroke_width(*width),
            ))?,
        }
        area.draw(&Text::new(
            label.clone(),
            (44, y),
            font(14, FontStyle::Normal).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// 1500 as "1.5k", on the rate axis.
fn per_second(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{}M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{}k", rate / 1e3)
    } else {
        format!("{rate}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{Interval, Phase, draw, phases, rates, step_lines};
    use crate::tasks::demo::record::{Mark, Recording, Sample};

    fn sample(at: f64, offered: u64, passed: u64, rate_limit: u64, pings: u64) -> Sample {
        Sample {
            at,
            offered,
            passed,
            dropped: BTreeMap::from([("rate_limit".to_owned(), rate_limit)]),
            pings_sent: pings,
            pings_answered: pings,
        }
    }

    #[test]
    fn rates_are_differences_of_cumulative_counters_over_each_interval() {
        let samples = [
            sample(0.0, 1000, 0, 0, 0),
            sample(0.25, 1000, 0, 0, 0),
            sample(0.5, 1001, 0, 0, 0),
            // A slow `stats`: 0.5 s to the next sample.
            sample(1.0, 51_001, 0, 0, 0),
            // A reload reset the counter: no negative rate.
            sample(1.25, 10, 0, 0, 0),
            // Two samples at the same instant: no interval.
            sample(1.25, 10, 0, 0, 0),
        ];
        let interval = |from, to, rate| Interval { from, to, rate };
        assert_eq!(
            rates(&samples, |s| s.offered),
            [
                interval(0.0, 0.25, 0.0),
                interval(0.25, 0.5, 4.0),
                interval(0.5, 1.0, 100_000.0),
                interval(1.0, 1.25, 0.0),
            ]
        );
        assert!(rates(&samples[..1], |s| s.offered).is_empty());
    }

    #[test]
    fn steps_are_drawn_through_runs_of_non_zero_rates() {
        let interval = |from, to, rate| Interval { from, to, rate };
        let intervals = [
            interval(0.0, 1.0, 0.0),
            interval(1.0, 2.0, 5.0),
            interval(2.0, 3.0, 6.0),
            interval(3.0, 4.0, 0.0),
            interval(4.0, 5.0, 7.0),
        ];
        assert_eq!(
            step_lines(&intervals),
            [
                vec![(1.0, 5.0), (2.0, 5.0), (2.0, 6.0), (3.0, 6.0)],
                vec![(4.0, 7.0), (5.0, 7.0)]
            ]
        );
        assert!(step_lines(&intervals[..1]).is_empty());
    }

    fn recording() -> Recording {
        // Quiet, then a flood from 1 s to 3 s cut to 100 passed a second.
        let samples = (0..=20)
            .map(|tick| {
                let at = f64::from(tick) * 0.2;
                let flooding = (at - 1.0).clamp(0.0, 2.0);
                let quiet = at.floor();
                let pings = quiet as u64;
                sample(
                    at,
                    (quiet + flooding * 10_000.0) as u64,
                    (quiet + flooding * 100.0) as u64,
                    (flooding * 9_900.0) as u64,
                    pings,
                )
            })
            .collect();
        Recording {
            samples,
            marks: vec![
                Mark {
                    at: 0.0,
                    label: "attach".to_owned(),
                },
                Mark {
                    at: 1.0,
                    label: "ping flood".to_owned(),
                },
                Mark {
                    at: 3.1,
                    label: "smurf".to_owned(),
                },
            ],
            left_out: 0,
        }
    }

    #[test]
    fn phases_count_what_happened_between_marks() {
        let phases = phases(&recording());
        assert_eq!(
            phases.iter().map(|p| p.label.as_str()).collect::<Vec<_>>(),
            ["attach", "ping flood", "smurf"]
        );
        let flood: &Phase = &phases[1];
        assert_eq!((flood.from, flood.to), (1.0, 3.1));
        // Samples at 1.0 and 3.0 (the last one before 3.1).
        assert_eq!(flood.offered, 20_002);
        assert_eq!(flood.passed, 202);
        assert_eq!(flood.dropped["rate_limit"], 19_800);
        assert_eq!((flood.pings_sent, flood.pings_answered), (2, 2));
        assert_eq!(phases[2].to, 4.0);
        assert_eq!(phases[2].dropped["rate_limit"], 0);
        assert!(super::phases(&Recording::default()).is_empty());
    }

    #[test]
    fn the_svg_has_every_series_the_steps_and_the_caption() {
        let svg = draw(
            &recording(),
            "icmp-guard under attack",
            &["the flood is cut to 1 in 100".to_owned()],
        )
        .expect("draws");
        assert!(svg.starts_with("<svg"), "{svg}");
        // Each <text> element's content.
        let texts: Vec<&str> = svg
            .split("</text>")
            .filter_map(|piece| Some(piece.rsplit_once('>')?.1.trim()))
            .collect();
        for text in [
            "icmp-guard under attack",
            "the flood is cut to 1 in 100",
            "offered: reached eth0 (20,004)",
            "passed (204)",
            "dropped: rate_limit (19,800)",
            "ping flood",
            "smurf",
            "sent, one a second (4)",
            "answered (4)",
            "unanswered (0)",
            "packets per second (log scale)",
            "drawn by: sudo cargo xtask demo --plot",
        ] {
            assert!(texts.contains(&text), "no text {text:?} in {texts:?}");
        }
        // The offered area, and a line each for passed, the drop reason and the pings.
        assert_eq!(svg.matches("<polygon").count(), 1, "{svg}");
        assert!(svg.matches("<polyline").count() >= 2 + 3, "{svg}");
        // No font is embedded or named but the generic family.
        assert!(!svg.contains("@font-face") && !svg.contains("url("));
        assert!(svg.contains(r#"font-family="sans-serif""#));
    }
}
