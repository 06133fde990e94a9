//! The SVG plots and HTML reports: ticks against hand-computed ones, value→pixel mapping,
//! skipped points, escaping, the CSV beside each figure, and the files `Report::write` makes.

use skipgate::report::svg::{linear_ticks, log_ticks};
use skipgate::report::{Figure, Plot, Report, Scale, Section, Series, Table, escape};
use skipgate::train::{LogFormat, MetricsLog, Record, read_log};

fn values_and_labels(ticks: &[skipgate::report::Tick]) -> (Vec<f64>, Vec<Option<&str>>) {
    (
        ticks.iter().map(|t| t.value).collect(),
        ticks.iter().map(|t| t.label.as_deref()).collect(),
    )
}

fn assert_values(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-12 * w.abs().max(1.0),
            "{got:?} vs {want:?}"
        );
    }
}

/// Range / 5 rounded up to 1, 2 or 5 × 10^k, the range widened to whole steps.
#[test]
fn linear_ticks_are_hand_computed_nice_steps() {
    // raw step 0.84/5 = 0.168 → 0.2; 0.13 → 0, 0.97 → 1.
    let (lo, hi, t) = linear_ticks(0.13, 0.97);
    let (v, l) = values_and_labels(&t);
    assert_eq!((lo, hi), (0.0, 1.0));
    assert_values(&v, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    assert_eq!(
        l,
        [
            Some("0.0"),
            Some("0.2"),
            Some("0.4"),
            Some("0.6"),
            Some("0.8"),
            Some("1.0")
        ]
    );
    // raw 94/5 = 18.8 → 20.
    let (_, _, t) = linear_ticks(3.0, 97.0);
    let (v, l) = values_and_labels(&t);
    assert_values(&v, &[0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
    assert_eq!(l[5], Some("100"));
    // raw 4.9/5 = 0.98 → 1 (9.8 rounds up to the next decade).
    let (lo, hi, t) = linear_ticks(-1.2, 3.7);
    assert_eq!((lo, hi), (-2.0, 4.0));
    let (_, l) = values_and_labels(&t);
    assert_eq!(
        l,
        [
            Some("-2"),
            Some("-1"),
            Some("0"),
            Some("1"),
            Some("2"),
            Some("3"),
            Some("4")
        ]
    );
    // raw 7e-5 → 1e-4; a step below 0.001 is written with an exponent.
    let (_, _, t) = linear_ticks(0.00012, 0.00047);
    let (v, l) = values_and_labels(&t);
    assert_values(&v, &[1e-4, 2e-4, 3e-4, 4e-4, 5e-4]);
    assert_eq!(
        l,
        [
            Some("1e-4"),
            Some("2e-4"),
            Some("3e-4"),
            Some("4e-4"),
            Some("5e-4")
        ]
    );
    // Values from 10^5 on too: raw 50000 → 5e4, one mantissa digit below the largest.
    let (_, _, t) = linear_ticks(0.0, 250_000.0);
    let (_, l) = values_and_labels(&t);
    assert_eq!(
        l,
        [
            Some("0"),
            Some("5.0e4"),
            Some("1.0e5"),
            Some("1.5e5"),
            Some("2.0e5"),
            Some("2.5e5")
        ]
    );
}

/// A constant (or single) value gets ±10 % of itself, zero gets ±1.
#[test]
fn linear_ticks_give_a_constant_some_span() {
    // 5 ± 0.5 → raw 0.2 → 4.4 … 5.6.
    let (lo, hi, t) = linear_ticks(5.0, 5.0);
    assert_eq!((lo, hi), (4.4, 5.6));
    assert_eq!(t.len(), 7);
    assert_eq!(t[3].label.as_deref(), Some("5.0"));
    // A constant learning rate: 0.01 ± 0.001 → raw 4e-4 → 5e-4, written with decimals.
    let (_, _, t) = linear_ticks(0.01, 0.01);
    let (v, l) = values_and_labels(&t);
    assert_values(&v, &[0.009, 0.0095, 0.01, 0.0105, 0.011]);
    assert_eq!(
        l,
        [
            Some("0.0090"),
            Some("0.0095"),
            Some("0.0100"),
            Some("0.0105"),
            Some("0.0110")
        ]
    );
    // 0 ± 1 → raw 0.4 → 0.5.
    let (_, _, t) = linear_ticks(0.0, 0.0);
    let (v, l) = values_and_labels(&t);
    assert_values(&v, &[-1.0, -0.5, 0.0, 0.5, 1.0]);
    assert_eq!(l[2], Some("0.0"), "no negative zero");
}

#[test]
fn log_ticks_are_whole_decades() {
    // 0.002 … 3 → 10^-3 … 10^1, four decades: no minor ticks.
    let (lo, hi, t) = log_ticks(0.002, 3.0);
    assert_eq!((lo, hi), (0.001, 10.0));
    let (v, l) = values_and_labels(&t);
    assert_eq!(v, [0.001, 0.01, 0.1, 1.0, 10.0]);
    assert_eq!(
        l,
        [
            Some("0.001"),
            Some("0.01"),
            Some("0.1"),
            Some("1"),
            Some("10")
        ]
    );
    // Twelve decades: every second one labelled (ceil(12 / 8) = 2), the others minor.
    let (_, _, t) = log_ticks(1e-12, 1.0);
    let labelled: Vec<&str> = t.iter().filter_map(|t| t.label.as_deref()).collect();
    assert_eq!(
        labelled,
        ["1e-12", "1e-10", "1e-8", "1e-6", "1e-4", "0.01", "1"]
    );
    assert_eq!(t.len(), 13);
    // Two decades: 2…9 × 10^k as minor ticks.
    let (lo, hi, t) = log_ticks(2.0, 50.0);
    assert_eq!((lo, hi), (1.0, 100.0));
    assert_eq!(t.len(), 3 + 16);
    let minor: Vec<f64> = t
        .iter()
        .filter(|t| t.label.is_none())
        .map(|t| t.value)
        .collect();
    assert_eq!(
        minor,
        [
            2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0
        ]
    );
    // A power of ten alone gets a decade on each side; other single values their decade.
    assert_eq!(
        log_ticks(100.0, 100.0).0..log_ticks(100.0, 100.0).1,
        10.0..1000.0
    );
    assert_eq!(log_ticks(3.0, 3.0).0..log_ticks(3.0, 3.0).1, 1.0..10.0);
    assert_eq!(log_ticks(1e-5, 1e-3).2[0].label.as_deref(), Some("1e-5"));
}

#[test]
fn scale_auto_is_log_only_for_positive_values_over_two_decades() {
    assert_eq!(Scale::auto([1.0, 0.5, 0.001]), Scale::Log);
    assert_eq!(Scale::auto([1.0, 0.02]), Scale::Linear);
    assert_eq!(Scale::auto([1.0, 1e-4, 0.0]), Scale::Linear);
    assert_eq!(
        Scale::auto([f64::NAN, 1.0, 1e-3, f64::INFINITY]),
        Scale::Log
    );
    assert_eq!(Scale::auto([]), Scale::Linear);
}

/// The ends of the range sit on the ends of the plot area, the middle in the middle; on a log
/// axis, 10 is halfway between 1 and 100; the polyline goes through exactly those pixels.
#[test]
fn values_map_to_pixels_linearly_or_logarithmically() {
    let plot = Plot::new("step", "value").series(Series::new("a", vec![(0.0, 0.0), (100.0, 1.0)]));
    let l = plot.layout();
    assert_eq!((l.x.lo, l.x.hi, l.y.lo, l.y.hi), (0.0, 100.0, 0.0, 1.0));
    assert!(l.x.px_lo > 30.0 && l.x.px_hi < 640.0 && l.x.px_lo < l.x.px_hi);
    assert!(l.y.px_lo < 360.0 && l.y.px_hi > 0.0 && l.y.px_hi < l.y.px_lo);
    assert_eq!(l.x.to_px(0.0), Some(l.x.px_lo));
    assert_eq!(l.x.to_px(100.0), Some(l.x.px_hi));
    assert_eq!(l.x.to_px(25.0), Some(0.75 * l.x.px_lo + 0.25 * l.x.px_hi));
    assert_eq!(l.y.to_px(0.5), Some((l.y.px_lo + l.y.px_hi) / 2.0));
    let svg = plot.to_svg();
    let want = format!(
        "points=\"{:.1},{:.1} {:.1},{:.1}\"",
        l.x.px_lo, l.y.px_lo, l.x.px_hi, l.y.px_hi
    );
    assert!(svg.contains(&want), "{want} not in\n{svg}");

    let plot = Plot::new("step", "norm")
        .y_scale(Scale::Log)
        .series(Series::new("a", vec![(0.0, 1.0), (1.0, 100.0)]));
    let l = plot.layout();
    assert_eq!((l.y.lo, l.y.hi), (1.0, 100.0));
    let mid = l.y.to_px(10.0).unwrap();
    assert!((mid - (l.y.px_lo + l.y.px_hi) / 2.0).abs() < 1e-9);
    // 2 sits at log10(2) ≈ 0.30103 of one decade, i.e. 0.150515 of the axis.
    let two = l.y.to_px(2.0).unwrap();
    let frac = (two - l.y.px_lo) / (l.y.px_hi - l.y.px_lo);
    assert!((frac - 0.150_514_997_8).abs() < 1e-9, "{frac}");
    assert_eq!(l.y.to_px(0.0), None);
    assert_eq!(l.y.to_px(-3.0), None);
    assert_eq!(l.y.to_px(f64::NAN), None);
    assert!(plot.to_svg().contains("norm, log scale"));
}

/// NaN, ±inf and non-positive values on a log axis are not drawn and break the line.
#[test]
fn non_finite_and_non_positive_points_are_skipped() {
    let points = vec![
        (1.0, 1.0),
        (2.0, 10.0),
        (3.0, f64::NAN),
        (4.0, 100.0),
        (5.0, 0.0),
        (6.0, -3.0),
        (7.0, 1000.0),
        (8.0, 10_000.0),
        (f64::INFINITY, 5.0),
    ];
    let plot = Plot::new("x", "y")
        .y_scale(Scale::Log)
        .series(Series::new("s", points));
    let l = plot.layout();
    assert_eq!((l.y.lo, l.y.hi), (1.0, 10_000.0));
    // Drawable x: 1, 2, 4, 7, 8 → raw step 1.4 → 2 → 0 … 8.
    assert_eq!((l.x.lo, l.x.hi), (0.0, 8.0));
    let svg = plot.to_svg();
    // Segments {1, 2}, {4}, {7, 8}: two lines, and a marker on each of the 5 points.
    assert_eq!(svg.matches("<polyline").count(), 2);
    assert_eq!(svg.matches("<circle").count(), 5);
    assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");

    // Nothing drawable at all: axes, "no data", no line.
    let plot = Plot::new("x", "y").series(Series::new("s", vec![(f64::NAN, 1.0)]));
    let svg = plot.to_svg();
    assert!(plot.layout().empty && svg.contains("no data"));
    assert_eq!(svg.matches("<polyline").count(), 0);
    // One point: a marker, in the middle of an axis widened around it.
    let plot = Plot::new("x", "y").series(Series::new("s", vec![(3.0, 5.0)]));
    let l = plot.layout();
    assert!(l.x.lo < 3.0 && l.x.hi > 3.0 && l.y.lo < 5.0 && l.y.hi > 5.0);
    let svg = plot.to_svg();
    assert_eq!(svg.matches("<circle").count(), 1);
    assert_eq!(svg.matches("<polyline").count(), 0);
    // Many points: a line without markers.
    let many: Vec<(f64, f64)> = (0..41).map(|i| (i as f64, i as f64)).collect();
    let svg = Plot::new("x", "y").series(Series::new("s", many)).to_svg();
    assert_eq!(svg.matches("<circle").count(), 0);
    assert_eq!(svg.matches("<polyline").count(), 1);
    // A dashed reference line: no markers either.
    let svg = Plot::new("x", "y")
        .series(Series::new("s", vec![(0.0, 1.0), (1.0, 1.0)]).dashed())
        .to_svg();
    assert_eq!(svg.matches("<circle").count(), 0);
    assert_eq!(
        svg.matches("stroke-dasharray=\"6 4\"").count(),
        2,
        "line and legend"
    );
}

#[test]
fn text_is_escaped_in_html_and_svg() {
    assert_eq!(
        escape("<a href=\"x\">&'"),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
    );
    let evil = "<script>alert(\"&\")</script>";
    let plot = Plot::new(evil, evil).series(Series::new(evil, vec![(0.0, 1.0), (1.0, 2.0)]));
    let report = Report::new(evil)
        .intro(evil)
        .section(Section::Figure(
            Figure::new("f", evil, plot).caption(evil).command(evil),
        ))
        .section(Section::Table(Table::new(evil, &[evil]).row([evil])))
        .section(Section::Text {
            title: evil.into(),
            text: evil.into(),
        });
    let html = report.to_html();
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("\"&\""));
    // Title, h1, intro, figure heading; in the SVG the aria-label (y and x label), the two axis
    // labels, the series' data-name and legend; caption, command, table heading, header cell,
    // row cell, text heading, text body.
    assert_eq!(
        html.matches("&lt;script&gt;alert(&quot;&amp;&quot;)&lt;/script&gt;")
            .count(),
        17
    );
}

/// The default CSV is every point of every series (drawable or not) under a header made of the
/// axis labels, quoted where they hold a comma or a quote.
#[test]
fn csv_beside_a_figure_holds_its_series() {
    let plot = Plot::new("step", "loss, \"nats\"")
        .series(Series::new("train", vec![(1.0, 0.5), (2.0, f64::NAN)]))
        .series(Series::new("val,1", vec![(2.0, 1e-7), (10.0, 2.25)]));
    assert_eq!(
        plot.to_csv(),
        "series,step,\"loss, \"\"nats\"\"\"\n\
         train,1,0.5\n\
         train,2,NaN\n\
         \"val,1\",2,0.0000001\n\
         \"val,1\",10,2.25\n"
    );
}

/// `write` puts every figure's CSV (its own or the plot's) beside a self-contained page.
#[test]
fn report_write_makes_a_self_contained_page_and_the_csv_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = Plot::new("step", "loss").series(Series::new("s", vec![(1.0, 2.0), (2.0, 1.0)]));
    let b = Plot::new("t", "‖∂L/∂h_t‖")
        .y_scale(Scale::Log)
        .series(Series::new("rnn", vec![(1.0, 1e-9), (50.0, 1.0)]));
    let report = Report::new("Demo")
        .intro("Two figures.")
        .section(Section::Heading("Part one".into()))
        .section(Section::Figure(
            Figure::new("loss", "Loss", a)
                .caption("The loss.")
                .command("skipgate train --task sum")
                .seed(3),
        ))
        .section(Section::Figure(
            Figure::new("grad-flow", "Gradient flow", b).csv("t,norm\n1,1e-9\n50,1\n"),
        ));
    let page = report.write(dir.path()).unwrap();
    assert_eq!(page, dir.path().join("report.html"));
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("<svg").count(), 2);
    assert_eq!(html.matches("<figure id=").count(), 2);
    assert!(html.contains("<figure id=\"loss\">") && html.contains("<figure id=\"grad-flow\">"));
    assert!(html.contains("Command: <code>skipgate train --task sum</code>; seed 3."));
    assert!(html.contains("Command: not recorded (made through the library); seed 0."));
    assert!(html.contains("<a href=\"loss.csv\">loss.csv</a>"));
    assert!(html.contains("<a href=\"#grad-flow\">Gradient flow</a>"));
    // No scripts, no external resources: the only URL is SVG's namespace name.
    for bad in ["<script", "<link", "<img", "src=", "url(", "@import"] {
        assert!(!html.contains(bad), "{bad}");
    }
    assert_eq!(
        html.matches("http").count(),
        html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("loss.csv")).unwrap(),
        "series,step,loss\ns,1,2\ns,2,1\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("grad-flow.csv")).unwrap(),
        "t,norm\n1,1e-9\n50,1\n"
    );
    // The same report gives the same bytes.
    assert_eq!(report.to_html(), html);

    // Bad or repeated ids are refused before anything is written.
    let other = tempfile::tempdir().unwrap();
    let plot = Plot::new("x", "y");
    let bad = Report::new("x").section(Section::Figure(Figure::new("a/b", "t", plot.clone())));
    let e = bad.write(other.path()).unwrap_err().to_string();
    assert!(
        e.contains("figure id \"a/b\"") && e.contains("letters"),
        "{e}"
    );
    let twice = Report::new("x")
        .section(Section::Figure(Figure::new("a", "t", plot.clone())))
        .section(Section::Figure(Figure::new("a", "u", plot)));
    let e = twice.write(other.path()).unwrap_err().to_string();
    assert!(e.contains("unique"), "{e}");
    assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 0);
}

/// A long legend wraps into rows above the plot; labels never leave the canvas.
#[test]
fn legend_wraps_and_stays_inside_the_plot_width() {
    let mut plot = Plot::new("step", "value");
    for i in 0..6 {
        plot = plot.series(Series::new(
            format!("a rather long series name {i}"),
            vec![(0.0, i as f64), (1.0, i as f64 + 1.0)],
        ));
    }
    let l = plot.layout();
    let rows: std::collections::BTreeSet<u64> = l.legend.iter().map(|e| e.2.to_bits()).collect();
    assert!(rows.len() >= 3, "{:?}", l.legend);
    assert!(l.legend.iter().all(|e| e.1 >= l.x.px_lo && e.1 < l.x.px_hi));
    // The plot area starts below the last legend row.
    let last_row = l.legend.iter().map(|e| e.2).fold(0.0, f64::max);
    assert!(l.y.px_hi > last_row + 4.0);
}

/// What the metrics log holds comes back from disk, NaN included, in both formats.
#[test]
fn metrics_log_reads_back_what_was_written() {
    for format in [LogFormat::Jsonl, LogFormat::Csv] {
        let dir = tempfile::tempdir().unwrap();
        let cols = vec!["val_loss".to_string(), "val_accuracy".to_string()];
        let mut log = MetricsLog::open(dir.path(), format, &cols, None).unwrap();
        log.write(&Record {
            step: 1,
            kind: "train",
            loss: Some(f64::NAN),
            lr: Some(1e-3),
            grad_norm: Some(f64::INFINITY),
            ..Record::default()
        })
        .unwrap();
        log.write(&Record {
            step: 1,
            kind: "eval",
            metrics: vec![("val_loss".into(), 0.1 + 0.2), ("val_accuracy".into(), 0.5)],
            ..Record::default()
        })
        .unwrap();
        drop(log);
        let back = read_log(dir.path(), format).unwrap();
        assert_eq!(back.len(), 2, "{format:?}");
        assert!(back[0].kind == "train" && back[0].loss.unwrap().is_nan());
        assert_eq!(back[0].lr, Some(1e-3));
        assert_eq!(back[0].grad_norm, Some(f64::INFINITY));
        assert_eq!(back[0].accuracy, None);
        assert_eq!(back[1].kind, "eval");
        let mut m = back[1].metrics.clone();
        m.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            m,
            [
                ("val_accuracy".to_string(), 0.5),
                ("val_loss".to_string(), 0.1 + 0.2)
            ]
        );
    }
}
