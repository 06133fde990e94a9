//! Synthetic tasks and character-level text: shapes, values against hand-derived expectations,
//! determinism and error messages.

use skipgate::Rng;
use skipgate::data::{
    CharVocab, CopyLayout, IGNORE, SHAKESPEARE, StreamBatches, TextCorpus, adding_problem,
    copy_task, one_hot, shuffled_batches, sum_task,
};

// ---------------------------------------------------------------- sum of a sequence

#[test]
fn sum_task_shapes_range_and_exact_row_sums() {
    let d = sum_task::<f64>(50, 7, &mut Rng::seed(1)).unwrap();
    assert_eq!(d.x.dim(), (50, 7, 1));
    assert_eq!(d.y.dim(), (50, 1));
    assert_eq!(d.len(), 50);
    assert!(d.x.iter().all(|&v| (0.0..1.0).contains(&v)));
    for i in 0..50 {
        let mut s = 0.0f64;
        for t in 0..7 {
            s += d.x[[i, t, 0]];
        }
        assert_eq!(d.y[[i, 0]], s, "row {i}");
    }
    // f32: the target is the f32 sum of the stored f32 values, exactly.
    let d = sum_task::<f32>(20, 5, &mut Rng::seed(2)).unwrap();
    for i in 0..20 {
        let s: f32 = (0..5).fold(0.0f32, |acc, t| acc + d.x[[i, t, 0]]);
        assert_eq!(d.y[[i, 0]], s);
    }
}

#[test]
fn sum_task_mean_predictor_mse_is_t_over_12() {
    // y = Σ of 5 i.i.d. U(0,1): mean 5/2, variance 5/12.
    let d = sum_task::<f64>(10_000, 5, &mut Rng::seed(3)).unwrap();
    let mse = d.y.iter().map(|&y| (y - 2.5) * (y - 2.5)).sum::<f64>() / 10_000.0;
    assert!((mse - 5.0 / 12.0).abs() < 0.02, "mse {mse}");
}

#[test]
fn sum_task_rejects_empty_sizes() {
    let e = sum_task::<f32>(0, 5, &mut Rng::seed(0)).unwrap_err();
    assert!(e.to_string().contains("sum_task: invalid n"), "{e}");
    let e = sum_task::<f32>(4, 0, &mut Rng::seed(0)).unwrap_err();
    assert!(e.to_string().contains("invalid seq_len"), "{e}");
}

#[test]
fn regression_batch_selects_rows_and_checks_indices() {
    let d = sum_task::<f64>(6, 3, &mut Rng::seed(4)).unwrap();
    let b = d.batch(&[4, 1, 4]).unwrap();
    assert_eq!(b.x.dim(), (3, 3, 1));
    assert_eq!(b.y.dim(), (3, 1));
    for (r, &i) in [4usize, 1, 4].iter().enumerate() {
        assert_eq!(b.y[[r, 0]], d.y[[i, 0]]);
        for t in 0..3 {
            assert_eq!(b.x[[r, t, 0]], d.x[[i, t, 0]]);
        }
    }
    let e = d.batch(&[0, 6]).unwrap_err().to_string();
    assert!(
        e.contains("indices[1] = 6") && e.contains("only 6 rows"),
        "{e}"
    );
}

#[test]
fn shuffled_batches_cover_every_row_once() {
    let bs = shuffled_batches(10, 4, &mut Rng::seed(5)).unwrap();
    assert_eq!(bs.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
    let mut all: Vec<usize> = bs.concat();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
    assert!(shuffled_batches(10, 0, &mut Rng::seed(5)).is_err());
}

// ---------------------------------------------------------------- adding problem

fn check_adding(n: usize, t_len: usize, seed: u64) -> Vec<(usize, usize)> {
    let d = adding_problem::<f64>(n, t_len, &mut Rng::seed(seed)).unwrap();
    assert_eq!(d.x.dim(), (n, t_len, 2));
    assert_eq!(d.y.dim(), (n, 1));
    let half = t_len / 2;
    let mut marks = Vec::new();
    for i in 0..n {
        let m: Vec<usize> = (0..t_len).filter(|&t| d.x[[i, t, 1]] == 1.0).collect();
        assert!(
            (0..t_len).all(|t| d.x[[i, t, 1]] == 0.0 || d.x[[i, t, 1]] == 1.0),
            "row {i}: marker channel must be 0/1"
        );
        assert_eq!(m.len(), 2, "row {i}: markers at {m:?}");
        assert!(
            m[0] < half && m[1] >= half,
            "row {i}: markers at {m:?}, half {half}"
        );
        assert!((0..t_len).all(|t| (0.0..1.0).contains(&d.x[[i, t, 0]])));
        assert_eq!(d.y[[i, 0]], d.x[[i, m[0], 0]] + d.x[[i, m[1], 0]]);
        marks.push((m[0], m[1]));
    }
    marks
}

#[test]
fn adding_problem_two_markers_one_per_half_and_marked_sum() {
    check_adding(300, 10, 6);
    check_adding(300, 7, 7); // odd: first half [0, 3), second [3, 7)
    // T = 2: the markers can only be at 0 and 1.
    assert!(check_adding(20, 2, 8).iter().all(|&m| m == (0, 1)));
    // Every position of each half is used.
    let marks = check_adding(400, 6, 9);
    for p in 0..3 {
        assert!(
            marks.iter().any(|m| m.0 == p),
            "first-half position {p} never marked"
        );
        assert!(
            marks.iter().any(|m| m.1 == p + 3),
            "second-half position {} never marked",
            p + 3
        );
    }
}

#[test]
fn adding_problem_constant_one_mse_is_one_sixth() {
    // y = u1 + u2 with u ~ U(0,1): mean 1, variance 2/12.
    let d = adding_problem::<f64>(20_000, 20, &mut Rng::seed(10)).unwrap();
    let mse = d.y.iter().map(|&y| (y - 1.0) * (y - 1.0)).sum::<f64>() / 20_000.0;
    assert!((mse - 1.0 / 6.0).abs() < 0.005, "mse {mse}");
}

#[test]
fn adding_problem_needs_two_steps() {
    let e = adding_problem::<f32>(4, 1, &mut Rng::seed(0)).unwrap_err();
    assert!(e.to_string().contains("must be at least 2"), "{e}");
    assert!(e.to_string().contains("got 1"), "{e}");
}

// ---------------------------------------------------------------- copy task

#[test]
fn copy_task_layout_targets_and_alphabet() {
    let (k, s, dly) = (8, 5, 10);
    let d = copy_task(200, k, s, dly, &mut Rng::seed(11)).unwrap();
    let t_len = s + dly + 1 + s;
    assert_eq!(d.inputs.dim(), (200, t_len));
    assert_eq!(d.targets.dim(), (200, t_len));
    assert_eq!(d.vocab_size, k + 2);
    assert_eq!(d.num_classes, k + 1);
    let layout = CopyLayout {
        num_symbols: k,
        len: s,
        delay: dly,
    };
    assert_eq!(layout.seq_len(), t_len);
    assert_eq!(layout.delimiter(), 9);
    assert_eq!(layout.answer_start(), 16);
    let mut seen = [false; 10];
    for i in 0..200 {
        for j in 0..s {
            let sym = d.inputs[[i, j]];
            assert!((1..=k).contains(&sym), "row {i}: symbol {sym}");
            seen[sym] = true;
            assert_eq!(d.targets[[i, s + dly + 1 + j]], sym, "row {i}, answer {j}");
            assert_eq!(d.targets[[i, j]], IGNORE);
        }
        for t in s..s + dly {
            assert_eq!(d.inputs[[i, t]], 0, "row {i}, delay step {t}");
            assert_eq!(d.targets[[i, t]], IGNORE);
        }
        assert_eq!(d.inputs[[i, s + dly]], k + 1, "row {i}: delimiter");
        assert_eq!(d.targets[[i, s + dly]], IGNORE);
        for t in s + dly + 1..t_len {
            assert_eq!(d.inputs[[i, t]], 0, "row {i}, answer step {t} input");
        }
    }
    assert_eq!(
        seen,
        [false, true, true, true, true, true, true, true, true, false]
    );
    // No delay: the delimiter follows the symbols directly.
    let d = copy_task(3, 2, 3, 0, &mut Rng::seed(12)).unwrap();
    assert_eq!(d.inputs.ncols(), 7);
    for i in 0..3 {
        assert_eq!(d.inputs[[i, 3]], 3);
        for j in 0..3 {
            assert_eq!(d.targets[[i, 4 + j]], d.inputs[[i, j]]);
        }
    }
    let b = d.batch(&[2]).unwrap();
    assert_eq!(b.inputs.row(0), d.inputs.row(2));
    assert_eq!(b.targets.row(0), d.targets.row(2));
}

#[test]
fn copy_task_rejects_empty_alphabet_and_length() {
    let e = copy_task(4, 0, 3, 2, &mut Rng::seed(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("copy_task: invalid num_symbols"), "{e}");
    let e = copy_task(4, 3, 0, 2, &mut Rng::seed(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("copy_task: invalid len"), "{e}");
}

#[test]
fn one_hot_by_hand_and_rejects_ignore() {
    let ids = ndarray::array![[0usize, 2], [1, 1]];
    let x = one_hot::<f64>(&ids, 3).unwrap();
    let expected = ndarray::array![
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
        [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    ];
    assert_eq!(x, expected);
    let bad = ndarray::array![[0usize, IGNORE]];
    let e = one_hot::<f32>(&bad, 3).unwrap_err().to_string();
    assert!(e.contains("ids[0, 1]") && e.contains("depth 3"), "{e}");
}

#[test]
fn same_seed_same_task_data() {
    assert_eq!(
        sum_task::<f32>(8, 4, &mut Rng::seed(21)).unwrap(),
        sum_task::<f32>(8, 4, &mut Rng::seed(21)).unwrap()
    );
    assert_eq!(
        adding_problem::<f64>(8, 9, &mut Rng::seed(22)).unwrap(),
        adding_problem::<f64>(8, 9, &mut Rng::seed(22)).unwrap()
    );
    assert_eq!(
        copy_task(8, 4, 3, 2, &mut Rng::seed(23)).unwrap(),
        copy_task(8, 4, 3, 2, &mut Rng::seed(23)).unwrap()
    );
    assert_ne!(
        sum_task::<f64>(8, 4, &mut Rng::seed(21)).unwrap(),
        sum_task::<f64>(8, 4, &mut Rng::seed(24)).unwrap()
    );
}

// ---------------------------------------------------------------- characters and text

#[test]
fn shakespeare_vocab_and_start() {
    assert!(
        SHAKESPEARE.starts_with("First Citizen:\nBefore we proceed any further, hear me speak.")
    );
    assert_eq!(SHAKESPEARE.len(), 1_115_394);
    let c = TextCorpus::shakespeare();
    assert_eq!(c.len(), 1_115_394);
    assert_eq!(c.vocab.len(), 65);
    // The 65 characters listed in data/PROVENANCE.md, in code-point order.
    let mut expected: Vec<char> = "\n !$&',-.3:;?".chars().collect();
    expected.extend('A'..='Z');
    expected.extend('a'..='z');
    expected.sort();
    assert_eq!(c.vocab.chars(), expected.iter().collect::<String>());
    assert_eq!(c.vocab.decode(&c.ids[..14]).unwrap(), "First Citizen:");
}

#[test]
fn encode_decode_round_trip_and_ids_by_hand() {
    let v = CharVocab::from_text("abca").unwrap();
    assert_eq!(v.chars(), "abc");
    assert_eq!(v.encode("abca").unwrap(), vec![0, 1, 2, 0]);
    assert_eq!(v.decode(&[2, 2, 0]).unwrap(), "cca");
    let text = "To be, or not\nto b\u{e9} — that\u{2019}s it.";
    let c = TextCorpus::from_text(text).unwrap();
    assert_eq!(c.ids.len(), text.chars().count());
    assert_eq!(c.vocab.decode(&c.ids).unwrap(), text);
    // Saved and restored vocabulary keeps every id.
    let restored = CharVocab::from_chars(c.vocab.chars()).unwrap();
    assert_eq!(restored, c.vocab);
    assert_eq!(restored.encode(text).unwrap(), c.ids);
    let e = v.decode(&[0, 3]).unwrap_err().to_string();
    assert!(
        e.contains("id 3 at position 1") && e.contains("size 3"),
        "{e}"
    );
}

#[test]
fn from_chars_rejects_unsorted_or_empty() {
    let e = CharVocab::from_chars("acb".into()).unwrap_err().to_string();
    assert!(e.contains("'c' at position 1 is followed by 'b'"), "{e}");
    let e = CharVocab::from_chars("aa".into()).unwrap_err().to_string();
    assert!(e.contains("sorted and unique"), "{e}");
    assert!(CharVocab::from_chars(String::new()).is_err());
}

#[test]
fn unknown_char_error_names_char_and_position() {
    let v = CharVocab::from_text("abc").unwrap();
    let e = v.encode("ab\u{e9}c").unwrap_err().to_string();
    assert!(e.contains("'\\u{e9}'"), "{e}");
    assert!(e.contains("position 2"), "{e}");
    let e = v.encode("a\nb").unwrap_err().to_string();
    assert!(e.contains("'\\n' at position 1"), "{e}");
}

#[test]
fn empty_text_errors() {
    let e = CharVocab::from_text("").unwrap_err().to_string();
    assert!(e.contains("text is empty"), "{e}");
    let e = TextCorpus::from_text("").unwrap_err().to_string();
    assert!(e.contains("text is empty"), "{e}");
}

#[test]
fn from_file_reads_and_reports_path_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.txt");
    std::fs::write(&good, "hello\nhi").unwrap();
    let c = TextCorpus::from_file(&good).unwrap();
    assert_eq!(c.vocab.chars(), "\nehilo");
    assert_eq!(c.vocab.decode(&c.ids).unwrap(), "hello\nhi");

    let missing = dir.path().join("missing.txt");
    let e = TextCorpus::from_file(&missing).unwrap_err();
    assert!(matches!(e, skipgate::Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("missing.txt"), "{e}");

    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, b"ab\xffcd").unwrap();
    let e = TextCorpus::from_file(&bad).unwrap_err();
    assert!(matches!(e, skipgate::Error::Data { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("bad.txt") && msg.contains("byte offset 2"),
        "{msg}"
    );

    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    let msg = TextCorpus::from_file(&empty).unwrap_err().to_string();
    assert!(
        msg.contains("empty.txt") && msg.contains("text is empty"),
        "{msg}"
    );
}

#[test]
fn split_sizes_are_contiguous() {
    let text: String = (0..1000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let c = TextCorpus::from_text(&text).unwrap();
    let (train, val) = c.split(0.9).unwrap();
    assert_eq!((train.len(), val.len()), (900, 100));
    assert_eq!([train, val].concat(), c.ids);
    let s = TextCorpus::shakespeare();
    let (train, val) = s.split(0.9).unwrap();
    // ⌊1,115,394 · 0.9⌋ = ⌊1,003,854.6⌋
    assert_eq!((train.len(), val.len()), (1_003_854, 111_540));
    assert_eq!(&val[..], &s.ids[1_003_854..]);
    for f in [0.0, 1.0, f64::NAN, -0.5] {
        let e = c.split(f).unwrap_err().to_string();
        assert!(e.contains("train_fraction"), "{e}");
    }
    // Too few ids for a non-empty training part.
    assert!(TextCorpus::from_text("ab").unwrap().split(0.1).is_err());
}

#[test]
fn random_batch_targets_are_inputs_shifted_by_one() {
    // Distinct ids: the first input of a row names its offset.
    let ids: Vec<usize> = (100..400).collect();
    let (x, y) = TextCorpus::random_batch(&ids, 16, 9, &mut Rng::seed(30)).unwrap();
    assert_eq!(x.dim(), (16, 9));
    assert_eq!(y.dim(), (16, 9));
    for b in 0..16 {
        let s = x[[b, 0]] - 100;
        assert!(s + 9 < ids.len());
        for t in 0..9 {
            assert_eq!(x[[b, t]], ids[s + t]);
            assert_eq!(y[[b, t]], ids[s + t + 1]);
        }
    }
    // Every start 0..=len−T−1 is reachable and no other: len 12, T 4 → starts 0..=7.
    let ids: Vec<usize> = (0..12).collect();
    let (x, _) = TextCorpus::random_batch(&ids, 400, 4, &mut Rng::seed(31)).unwrap();
    let mut starts: Vec<usize> = x.column(0).to_vec();
    starts.sort();
    starts.dedup();
    assert_eq!(starts, (0..8).collect::<Vec<_>>());
    // On the real text: the window of each row is the corpus at some offset.
    let c = TextCorpus::shakespeare();
    let (train, _) = c.split(0.9).unwrap();
    let (x, y) = TextCorpus::random_batch(&train, 4, 32, &mut Rng::seed(32)).unwrap();
    for b in 0..4 {
        let window: Vec<usize> = x.row(b).iter().copied().chain([y[[b, 31]]]).collect();
        let found = train.windows(33).any(|w| w == &window[..]);
        assert!(found, "row {b} is not a window of the training text");
        for t in 0..31 {
            assert_eq!(y[[b, t]], x[[b, t + 1]]);
        }
    }
}

#[test]
fn same_seed_same_text_batch() {
    let c = TextCorpus::shakespeare();
    let a = TextCorpus::random_batch(&c.ids, 8, 50, &mut Rng::seed(40)).unwrap();
    let b = TextCorpus::random_batch(&c.ids, 8, 50, &mut Rng::seed(40)).unwrap();
    let d = TextCorpus::random_batch(&c.ids, 8, 50, &mut Rng::seed(41)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, d);
}

#[test]
fn too_short_text_error_names_both_numbers() {
    let ids = vec![0usize; 7];
    let e = TextCorpus::random_batch(&ids, 2, 9, &mut Rng::seed(0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("7 ids") && e.contains("seq_len 9") && e.contains("10 ids"),
        "{e}"
    );
    // Exactly seq_len + 1 ids is enough (one window).
    let ids: Vec<usize> = (0..10).collect();
    let (x, y) = TextCorpus::random_batch(&ids, 3, 9, &mut Rng::seed(0)).unwrap();
    for b in 0..3 {
        assert_eq!(x.row(b).to_vec(), (0..9).collect::<Vec<_>>());
        assert_eq!(y.row(b).to_vec(), (1..10).collect::<Vec<_>>());
    }
    let e = TextCorpus::eval_batches(&ids, 2, 10)
        .unwrap_err()
        .to_string();
    assert!(e.contains("10 ids") && e.contains("seq_len 10"), "{e}");
}

#[test]
fn eval_batches_cover_the_split_in_order() {
    // 26 ids, T = 5: W = ⌊25 / 5⌋ = 5 windows, batches of 2 → rows 2, 2, 1.
    let ids: Vec<usize> = (0..26).collect();
    let bs = TextCorpus::eval_batches(&ids, 2, 5).unwrap();
    assert_eq!(
        bs.iter().map(|b| b.0.nrows()).collect::<Vec<_>>(),
        vec![2, 2, 1]
    );
    let mut w = 0;
    for (x, y) in &bs {
        assert_eq!(x.ncols(), 5);
        for b in 0..x.nrows() {
            assert_eq!(x.row(b).to_vec(), (5 * w..5 * w + 5).collect::<Vec<_>>());
            assert_eq!(
                y.row(b).to_vec(),
                (5 * w + 1..5 * w + 6).collect::<Vec<_>>()
            );
            w += 1;
        }
    }
    assert_eq!(w, 5);
    // 25 ids: the last target would be id 25, which is missing → 4 windows.
    let bs = TextCorpus::eval_batches(&ids[..25], 2, 5).unwrap();
    assert_eq!(bs.iter().map(|b| b.0.nrows()).sum::<usize>(), 4);
    // Deterministic.
    assert_eq!(bs, TextCorpus::eval_batches(&ids[..25], 2, 5).unwrap());
}

#[test]
fn stream_batches_continue_across_chunks() {
    // 103 ids, B = 4 → L = 25 (3 ids dropped); T = 7 → chunks of 7, 7, 7, 3.
    let ids: Vec<usize> = (0..103).collect();
    let mut sb = StreamBatches::new(&ids, 4).unwrap();
    assert_eq!((sb.batch_size(), sb.stream_len()), (4, 25));
    assert_eq!(sb.num_chunks(7), 4);
    let mut chunks = Vec::new();
    while let Some(c) = sb.next_chunk(7).unwrap() {
        chunks.push(c);
    }
    assert_eq!(
        chunks.iter().map(|c| c.0.ncols()).collect::<Vec<_>>(),
        vec![7, 7, 7, 3]
    );
    for b in 0..4 {
        let xs: Vec<usize> = chunks.iter().flat_map(|c| c.0.row(b).to_vec()).collect();
        let ys: Vec<usize> = chunks.iter().flat_map(|c| c.1.row(b).to_vec()).collect();
        assert_eq!(
            xs,
            (25 * b..25 * b + 24).collect::<Vec<_>>(),
            "stream {b} inputs"
        );
        assert_eq!(
            ys,
            (25 * b + 1..25 * b + 25).collect::<Vec<_>>(),
            "stream {b} targets"
        );
        for k in 0..3 {
            let (x0, y0) = &chunks[k];
            let (x1, _) = &chunks[k + 1];
            // Row b of chunk k+1 starts where row b of chunk k ended.
            assert_eq!(x1[[b, 0]], x0[[b, 6]] + 1);
            assert_eq!(x1[[b, 0]], y0[[b, 6]]);
        }
    }
    assert!(sb.next_chunk(7).unwrap().is_none());
    sb.reset();
    assert_eq!(sb.position(), 0);
    assert_eq!(sb.next_chunk(7).unwrap().unwrap(), chunks[0]);

    // On the real text: row b starts at b·L.
    let c = TextCorpus::shakespeare();
    let mut sb = StreamBatches::new(&c.ids, 16).unwrap();
    let l = c.len() / 16;
    assert_eq!(sb.stream_len(), l);
    let (x0, y0) = sb.next_chunk(64).unwrap().unwrap();
    let (x1, _) = sb.next_chunk(64).unwrap().unwrap();
    for b in 0..16 {
        assert_eq!(x0.row(b).to_vec(), c.ids[b * l..b * l + 64].to_vec());
        assert_eq!(y0.row(b).to_vec(), c.ids[b * l + 1..b * l + 65].to_vec());
        assert_eq!(x1.row(b).to_vec(), c.ids[b * l + 64..b * l + 128].to_vec());
    }
}

#[test]
fn stream_batches_errors() {
    let e = StreamBatches::new(&[1, 2, 3], 2).unwrap_err().to_string();
    assert!(
        e.contains("3 ids cut into 2 streams give 1 ids per stream"),
        "{e}"
    );
    assert!(StreamBatches::new(&[1, 2, 3], 0).is_err());
    let mut sb = StreamBatches::new(&[1, 2, 3, 4], 2).unwrap();
    let e = sb.next_chunk(0).unwrap_err().to_string();
    assert!(e.contains("invalid seq_len"), "{e}");
}
