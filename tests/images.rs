//! Image data: the IDX, CIFAR-10 and digits readers on hand-built files (values and every error
//! message), the embedded MNIST test set and digits against their published statistics,
//! normalisation, crop/flip positions, batching and epoch order.

use std::io::Write;
use std::path::Path;

use ndarray::{Array3, Array4, array};
use skipgate::Rng;
use skipgate::data::images::{
    self, Augment, AugmentDraw, CIFAR10_CLASSES, EpochBatches, FASHION_MNIST_DIR, ImageSet,
    Normalize, Split, batch, load_cifar10_dir, load_fashion_mnist, load_idx_dir, parse_cifar_batch,
    parse_digits_csv, parse_idx_images, parse_idx_labels, read_cifar_batch, read_digits_csv,
    read_idx_images, read_idx_labels,
};

// ---------------------------------------------------------------- helpers

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// An IDX image file: magic 0x803, n, rows, cols (big-endian), then `pixels`.
fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for v in [n, rows, cols] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(pixels);
    b
}

/// An IDX label file: magic 0x801, n (big-endian), then `labels`.
fn idx_labels(n: u32, labels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(labels);
    b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// One CIFAR-10 record: the label byte, then 1024 red, 1024 green, 1024 blue bytes.
fn cifar_record(label: u8, pixel: impl Fn(usize, usize, usize) -> u8) -> Vec<u8> {
    let mut r = vec![label];
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                r.push(pixel(c, y, x));
            }
        }
    }
    r
}

/// A set whose image `i` is a single pixel of value `i` (to identify images after reordering).
fn numbered_set(n: usize) -> ImageSet {
    let images = Array4::from_shape_fn((n, 1, 1, 1), |(i, _, _, _)| i as u8);
    ImageSet::new("numbered", images, (0..n).map(|i| i % 3).collect(), 3, 255).unwrap()
}

fn channel_stats(x: &Array4<f32>, c: usize) -> (f64, f64) {
    let vals: Vec<f64> = x
        .index_axis(ndarray::Axis(1), c)
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let n = vals.len() as f64;
    let m = vals.iter().sum::<f64>() / n;
    let var = vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n;
    (m, var.sqrt())
}

// ---------------------------------------------------------------- IDX

#[test]
fn idx_raw_and_gzip_files_parse_to_the_right_pixels_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    // 3 images of 2×3; pixel (i, r, c) = 6i + 3r + c + 1.
    let pixels: Vec<u8> = (1..=18).collect();
    let img = idx_images(3, 2, 3, &pixels);
    let lab = idx_labels(3, &[3, 0, 9]);
    for (name, bytes_img, bytes_lab) in [
        ("raw", img.clone(), lab.clone()),
        ("gz", gzip(&img), gzip(&lab)),
    ] {
        let pi = write(dir.path(), &format!("{name}-images"), &bytes_img);
        let pl = write(dir.path(), &format!("{name}-labels"), &bytes_lab);
        let x = read_idx_images(&pi).unwrap();
        assert_eq!(x.dim(), (3, 1, 2, 3), "{name}");
        for i in 0..3 {
            for r in 0..2 {
                for c in 0..3 {
                    assert_eq!(x[[i, 0, r, c]] as usize, 6 * i + 3 * r + c + 1, "{name}");
                }
            }
        }
        assert_eq!(x[[1, 0, 1, 2]], 12);
        assert_eq!(read_idx_labels(&pl).unwrap(), vec![3, 0, 9], "{name}");
    }
    // The same from bytes.
    assert_eq!(
        parse_idx_images(&gzip(&img), "mem").unwrap(),
        parse_idx_images(&img, "mem").unwrap()
    );
    assert_eq!(parse_idx_labels(&lab, "mem").unwrap(), vec![3, 0, 9]);
}

#[test]
fn idx_wrong_magic_names_the_file_and_both_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let labels = write(dir.path(), "labels-as-images", &idx_labels(2, &[1, 2]));
    let e = read_idx_images(&labels).unwrap_err().to_string();
    assert!(e.contains("labels-as-images"), "{e}");
    assert!(
        e.contains("wrong magic number 0x00000801, expected 0x00000803 (an IDX image file)"),
        "{e}"
    );
    assert!(e.contains("0x00000801 is an IDX label file"), "{e}");

    let images = write(dir.path(), "images-as-labels", &idx_images(1, 1, 1, &[0]));
    let e = read_idx_labels(&images).unwrap_err().to_string();
    assert!(e.contains("images-as-labels"), "{e}");
    assert!(
        e.contains("wrong magic number 0x00000803, expected 0x00000801 (an IDX label file)"),
        "{e}"
    );

    // Something else entirely (a PNG signature).
    let e = parse_idx_images(b"\x89PNG\r\n\x1a\n0123456789abcdef", "pic.png")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pic.png: not a valid IDX image file: wrong magic number 0x89504e47"),
        "{e}"
    );
}

#[test]
fn idx_image_count_is_checked_against_the_byte_size() {
    // The full-size case of the MNIST test file, 10 bytes short.
    let short = idx_images(10_000, 28, 28, &vec![0u8; 7_839_990]);
    let e = parse_idx_images(&short, "t10k-images-idx3-ubyte")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("header says 10000 images of 28×28 = 7840000 bytes, file has 7839990"),
        "{e}"
    );
    assert!(
        e.starts_with("t10k-images-idx3-ubyte: not a valid IDX image file"),
        "{e}"
    );

    // Too many bytes is wrong too; gzip input reports the decompressed size.
    let long = idx_images(2, 2, 2, &[0u8; 9]);
    let e = parse_idx_images(&gzip(&long), "x.gz")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("header says 2 images of 2×2 = 8 bytes, file has 9 (after the 16-byte header, decompressed)"),
        "{e}"
    );

    // Shorter than the header; zero dimensions.
    let e = parse_idx_images(&[0, 0, 8, 3, 0, 0], "tiny")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the file has 6 bytes, shorter than the 16-byte header"),
        "{e}"
    );
    let e = parse_idx_images(&idx_images(3, 0, 28, &[]), "flat")
        .unwrap_err()
        .to_string();
    assert!(e.contains("header says 3 images of 0×28"), "{e}");
}

#[test]
fn idx_label_count_and_values_are_checked() {
    let e = parse_idx_labels(&idx_labels(5, &[1, 2, 3, 4]), "lab")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lab: not a valid IDX label file: header says 5 labels = 5 bytes, file has 4"),
        "{e}"
    );
    let e = parse_idx_labels(&idx_labels(4, &[1, 12, 3, 14]), "lab")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("label 12 at index 1 is not a class 0..9; the largest label in the file is 14"),
        "{e}"
    );
    let e = parse_idx_labels(&[0, 0, 8], "lab").unwrap_err().to_string();
    assert!(e.contains("shorter than the 8-byte header"), "{e}");
}

#[test]
fn idx_truncated_gzip_is_reported() {
    let gz = gzip(&idx_images(4, 5, 5, &[7u8; 100]));
    let cut = &gz[..gz.len() / 2];
    let e = parse_idx_images(cut, "cut.gz").unwrap_err().to_string();
    assert!(
        e.contains("cut.gz: not a valid IDX image file: the gzip stream cannot be decompressed"),
        "{e}"
    );
    assert!(e.contains("truncated or corrupt"), "{e}");
}

#[test]
fn idx_dir_reads_the_standard_names_gz_or_raw() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tiny-mnist");
    std::fs::create_dir(&dir).unwrap();
    // Training: gzip files; test: raw files.
    write(
        &dir,
        "train-images-idx3-ubyte.gz",
        &gzip(&idx_images(2, 2, 2, &[1, 2, 3, 4, 5, 6, 7, 8])),
    );
    write(
        &dir,
        "train-labels-idx1-ubyte.gz",
        &gzip(&idx_labels(2, &[4, 5])),
    );
    write(
        &dir,
        "t10k-images-idx3-ubyte",
        &idx_images(1, 2, 2, &[9, 10, 11, 12]),
    );
    write(&dir, "t10k-labels-idx1-ubyte", &idx_labels(1, &[8]));

    let train = load_idx_dir(&dir, Split::Train).unwrap();
    assert_eq!(train.shape(), (2, 1, 2, 2));
    assert_eq!(train.labels(), &[4, 5]);
    assert_eq!(train.images()[[1, 0, 0, 1]], 6);
    assert_eq!(train.name(), "tiny-mnist-train");
    assert_eq!((train.num_classes(), train.max_value()), (10, 255));

    let test = load_idx_dir(&dir, Split::Test).unwrap();
    assert_eq!(test.labels(), &[8]);
    assert_eq!(test.image(0).unwrap(), array![[[9u8, 10], [11, 12]]]);
    assert_eq!(test.name(), "tiny-mnist-test");
}

#[test]
fn idx_dir_label_count_mismatch_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "t10k-images-idx3-ubyte",
        &idx_images(3, 1, 1, &[0, 1, 2]),
    );
    write(
        dir.path(),
        "t10k-labels-idx1-ubyte.gz",
        &gzip(&idx_labels(2, &[0, 1])),
    );
    let e = load_idx_dir(dir.path(), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(e.contains("t10k-labels-idx1-ubyte.gz has 2 labels"), "{e}");
    assert!(e.contains("t10k-images-idx3-ubyte has 3 images"), "{e}");
}

#[test]
fn idx_missing_dir_or_file_names_the_expected_files() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("no-such-dir");
    let e = load_idx_dir(&missing, Split::Train)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no-such-dir"), "{e}");
    assert!(e.contains("directory not found"), "{e}");
    assert!(
        e.contains("train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]"),
        "{e}"
    );
    assert!(e.contains("apt-get install dataset-fashion-mnist"), "{e}");
    assert!(e.contains("/usr/share/datasets/fashion-mnist/"), "{e}");

    // Images present, labels missing.
    write(
        root.path(),
        "t10k-images-idx3-ubyte.gz",
        &gzip(&idx_images(1, 1, 1, &[0])),
    );
    let e = load_idx_dir(root.path(), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no file t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz"),
        "{e}"
    );
    assert!(
        e.contains("t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]"),
        "{e}"
    );
}

/// Runs only where `apt-get install dataset-fashion-mnist` has been done; passes trivially
/// elsewhere. Expected values from the dataset's documentation (1000 / 6000 per class) and
/// `data/PROVENANCE.md` (first test labels).
#[test]
fn fashion_mnist_package_if_installed() {
    if !Path::new(FASHION_MNIST_DIR)
        .join("t10k-images-idx3-ubyte.gz")
        .is_file()
    {
        eprintln!("{FASHION_MNIST_DIR} not installed; skipping");
        return;
    }
    let test = load_fashion_mnist(Split::Test).unwrap();
    assert_eq!(test.shape(), (10_000, 1, 28, 28));
    assert_eq!(test.name(), "fashion-mnist-test");
    assert_eq!(&test.labels()[..10], &[9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
    assert_eq!(test.class_counts(), vec![1000; 10]);
    let train = load_fashion_mnist(Split::Train).unwrap();
    assert_eq!(train.shape(), (60_000, 1, 28, 28));
    assert_eq!(train.class_counts(), vec![6000; 10]);
}

// ---------------------------------------------------------------- CIFAR-10

#[test]
fn cifar_records_round_trip_in_channel_major_order() {
    let dir = tempfile::tempdir().unwrap();
    // Record 0: a flat colour (red 200, green 100, blue 50); record 1: every byte distinct-ish.
    let mut bytes = cifar_record(3, |c, _, _| [200, 100, 50][c]);
    let pattern = |c: usize, y: usize, x: usize| ((c * 1024 + y * 32 + x) % 251) as u8;
    bytes.extend(cifar_record(9, pattern));
    // The layout as stated by the format: label, then red plane, green plane, blue plane.
    assert_eq!(bytes.len(), 2 * 3073);
    assert_eq!(
        (bytes[1], bytes[1024], bytes[1025], bytes[2049], bytes[3072]),
        (200, 200, 100, 50, 50)
    );
    let path = write(dir.path(), "data_batch_1.bin", &bytes);

    let set = read_cifar_batch(&path).unwrap();
    assert_eq!(set.shape(), (2, 3, 32, 32));
    assert_eq!(set.labels(), &[3, 9]);
    assert_eq!((set.num_classes(), set.max_value()), (10, 255));
    let x = set.images();
    for (c, v) in [200u8, 100, 50].into_iter().enumerate() {
        assert!(
            x.index_axis(ndarray::Axis(0), 0)
                .index_axis(ndarray::Axis(0), c)
                .iter()
                .all(|&p| p == v)
        );
    }
    for c in 0..3 {
        for y in 0..32 {
            for x_ in 0..32 {
                assert_eq!(x[[1, c, y, x_]], pattern(c, y, x_));
                // Byte offset in the file: record 1 starts at 3073, pixels after its label byte.
                assert_eq!(x[[1, c, y, x_]], bytes[3073 + 1 + c * 1024 + y * 32 + x_]);
            }
        }
    }
    assert_eq!(CIFAR10_CLASSES[3], "cat");
}

#[test]
fn cifar_truncated_and_bad_label_files_are_errors() {
    // A full-size batch 1000 bytes short.
    let e = parse_cifar_batch(&vec![0u8; 30_729_000], "data_batch_2.bin")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data_batch_2.bin: not a valid CIFAR-10 binary batch file"),
        "{e}"
    );
    assert!(
        e.contains("30730000 bytes expected for 10000 records, found 30729000"),
        "{e}"
    );

    // Not a whole number of records.
    let e = parse_cifar_batch(&vec![0u8; 2 * 3073 + 5], "odd.bin")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("9219 bytes expected for 3 records, found 6151"),
        "{e}"
    );
    assert!(e.contains("not a whole number of 3073-byte records"), "{e}");

    let e = parse_cifar_batch(&[], "empty.bin").unwrap_err().to_string();
    assert!(
        e.contains("empty.bin: not a valid CIFAR-10 binary batch file: the file is empty"),
        "{e}"
    );

    let mut bytes = cifar_record(2, |_, _, _| 0);
    bytes.extend(cifar_record(10, |_, _, _| 0));
    let e = parse_cifar_batch(&bytes, "bad.bin")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("record 1 (byte offset 3073) has label 10; CIFAR-10 labels are 0..9"),
        "{e}"
    );

    let e = read_cifar_batch("/nonexistent/test_batch.bin")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/test_batch.bin"), "{e}");
}

#[test]
fn cifar_dir_reads_five_training_batches_in_order_and_the_test_batch() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&dir).unwrap();
    for k in 1..=5u8 {
        // Batch k: two records with labels k-1 and (k+4) mod 10, pixels all 10k + record.
        let mut b = cifar_record(k - 1, |_, _, _| 10 * k);
        b.extend(cifar_record((k + 4) % 10, |_, _, _| 10 * k + 1));
        write(&dir, &format!("data_batch_{k}.bin"), &b);
    }
    write(&dir, "test_batch.bin", &cifar_record(7, |c, _, _| c as u8));

    // Pointing at the parent finds the extracted folder.
    let train = load_cifar10_dir(root.path(), Split::Train).unwrap();
    assert_eq!(train.shape(), (10, 3, 32, 32));
    assert_eq!(train.labels(), &[0, 5, 1, 6, 2, 7, 3, 8, 4, 9]);
    assert_eq!(train.name(), "cifar-10-train");
    for i in 0..10 {
        let want = 10 * (i / 2 + 1) as u8 + (i % 2) as u8;
        assert!(
            train.image(i).unwrap().iter().all(|&p| p == want),
            "image {i}"
        );
    }
    let test = load_cifar10_dir(&dir, Split::Test).unwrap();
    assert_eq!(test.labels(), &[7]);
    assert_eq!(test.images()[[0, 2, 31, 31]], 2);

    // A missing file names itself and the expected set.
    std::fs::remove_file(dir.join("data_batch_4.bin")).unwrap();
    let e = load_cifar10_dir(&dir, Split::Train)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no file data_batch_4.bin"), "{e}");
    assert!(
        e.contains("data_batch_1.bin, data_batch_2.bin, data_batch_3.bin, data_batch_4.bin, data_batch_5.bin"),
        "{e}"
    );
    let e = load_cifar10_dir(root.path().join("nope"), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope: directory not found"), "{e}");
    assert!(e.contains("test_batch.bin"), "{e}");
    assert!(e.contains("cifar-10-binary.tar.gz"), "{e}");
}

// ---------------------------------------------------------------- embedded data

#[test]
fn embedded_mnist_matches_the_published_test_set_statistics() {
    let set = ImageSet::mnist_test_embedded();
    assert_eq!(set.shape(), (10_000, 1, 28, 28));
    assert_eq!(set.name(), "mnist-test");
    assert_eq!(&set.labels()[..10], &[7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
    assert_eq!(
        set.class_counts(),
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    let sum: u64 = set.images().iter().map(|&p| u64::from(p)).sum();
    let mean = sum as f64 / 7_840_000.0;
    assert!((mean - 33.79).abs() < 0.005, "mean pixel {mean}");
    assert!(
        (mean / 255.0 - 0.1325).abs() < 0.00005,
        "scaled mean {}",
        mean / 255.0
    );
    let norm = Normalize::from_data(&set).unwrap();
    assert!((f64::from(norm.mean[0]) - mean / 255.0).abs() < 1e-6);
    // Background is 0 and full ink 255 both occur.
    assert_eq!(set.images().iter().min(), Some(&0));
    assert_eq!(set.images().iter().max(), Some(&255));
}

#[test]
fn embedded_digits_match_scikit_learn() {
    let set = ImageSet::digits_embedded();
    assert_eq!(set.shape(), (1797, 1, 8, 8));
    assert_eq!(
        (set.name(), set.max_value(), set.num_classes()),
        ("sklearn-digits", 16, 10)
    );
    assert_eq!(
        set.class_counts(),
        vec![178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    );
    assert_eq!(&set.labels()[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(set.images().iter().min(), Some(&0));
    assert_eq!(set.images().iter().max(), Some(&16));
    // The first CSV line begins "0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0".
    let first = set.image(0).unwrap();
    assert_eq!(
        first.index_axis(ndarray::Axis(0), 0).row(0).to_vec(),
        vec![0, 0, 5, 13, 9, 1, 0, 0]
    );
    assert_eq!(
        first.index_axis(ndarray::Axis(0), 0).row(1).to_vec(),
        vec![0, 0, 13, 15, 10, 15, 5, 0]
    );
}

#[test]
fn digits_csv_accepts_plain_and_decimal_values_and_reports_bad_rows() {
    let row = |class: &str| {
        let mut v: Vec<String> = (0..64).map(|k| (k % 17).to_string()).collect();
        v.push(class.to_string());
        v.join(",")
    };
    // Plain, with ".0" values and a CRLF line, and gzip.
    let text = format!("{}\r\n{}\n\n", row("4"), row("7").replace(",16,", ",16.0,"));
    let set = parse_digits_csv(text.as_bytes(), "d.csv").unwrap();
    assert_eq!(set.shape(), (2, 1, 8, 8));
    assert_eq!(set.labels(), &[4, 7]);
    assert_eq!(set.images()[[1, 0, 2, 0]], 16); // pixel 16 = row 2, column 0
    assert_eq!(set.images()[[0, 0, 7, 7]], (63 % 17) as u8);
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "d.csv.gz", &gzip(text.as_bytes()));
    assert_eq!(read_digits_csv(&p).unwrap().images(), set.images());

    let e = parse_digits_csv(format!("{}\n{}", row("1"), "1,2,3").as_bytes(), "d.csv")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("d.csv: not a valid digits CSV file: line 2 has 3 columns, expected 65"),
        "{e}"
    );
    let e = parse_digits_csv(row("1").replacen("0,", "17,", 1).as_bytes(), "d.csv")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 1, column 1: pixel value 17 is not an integer in 0..16"),
        "{e}"
    );
    let e = parse_digits_csv(row("10").as_bytes(), "d.csv")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 1, column 65: class 10 is not an integer in 0..9"),
        "{e}"
    );
    let e = parse_digits_csv(row("2.5").as_bytes(), "d.csv")
        .unwrap_err()
        .to_string();
    assert!(e.contains("class 2.5 is not an integer"), "{e}");
    let e = parse_digits_csv(row("x").as_bytes(), "d.csv")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 1, column 65: \"x\" is not a number"),
        "{e}"
    );
    let e = parse_digits_csv(b"\n\n", "d.csv").unwrap_err().to_string();
    assert!(e.contains("no rows"), "{e}");
}

// ---------------------------------------------------------------- ImageSet

#[test]
fn image_set_checks_its_parts_and_subsets() {
    let imgs = Array4::<u8>::zeros((3, 1, 2, 2));
    let e = ImageSet::new("s", imgs.clone(), vec![0, 1], 2, 255)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ImageSet s: 2 labels for 3 images"), "{e}");
    let e = ImageSet::new("s", imgs.clone(), vec![0, 1, 2], 2, 255)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("label 2 of image 2 is not below num_classes 2"),
        "{e}"
    );
    let mut hot = imgs.clone();
    hot[[1, 0, 1, 1]] = 17;
    let e = ImageSet::new("s", hot, vec![0, 1, 0], 2, 16)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("image 1 has pixel value 17, above max_value 16"),
        "{e}"
    );

    let set = numbered_set(6); // labels 0 1 2 0 1 2
    assert_eq!(set.class_counts(), vec![2, 2, 2]);
    let sub = set.subset(&[5, 0, 5]).unwrap();
    assert_eq!(sub.labels(), &[2, 0, 2]);
    assert_eq!(
        sub.images().iter().copied().collect::<Vec<_>>(),
        vec![5, 0, 5]
    );
    assert_eq!(sub.class_counts(), vec![1, 0, 2]);
    let e = set.subset(&[1, 6]).unwrap_err().to_string();
    assert!(
        e.contains("index 6 at position 1 is out of range for a set of 6 images"),
        "{e}"
    );
    assert!(set.image(6).is_none());
}

#[test]
fn split_is_a_seeded_partition() {
    let set = numbered_set(50);
    let (a, b) = images::split(&set, 0.8, 11).unwrap();
    assert_eq!((a.len(), b.len()), (40, 10));
    let ids = |s: &ImageSet| s.images().iter().map(|&p| p as usize).collect::<Vec<_>>();
    let (ia, ib) = (ids(&a), ids(&b));
    assert!(ia.windows(2).all(|w| w[0] < w[1]) && ib.windows(2).all(|w| w[0] < w[1]));
    let mut all = [ia.clone(), ib.clone()].concat();
    all.sort_unstable();
    assert_eq!(all, (0..50).collect::<Vec<_>>());
    // Labels travel with their images.
    assert!(a.labels().iter().zip(&ia).all(|(&l, &i)| l == i % 3));
    // Same seed, same partition; another seed, another one.
    let (a2, _) = set.split(0.8, 11).unwrap();
    assert_eq!(ids(&a2), ia);
    let (a3, _) = set.split(0.8, 12).unwrap();
    assert_ne!(ids(&a3), ia);

    for f in [0.0, 1.0, -0.5, f64::NAN] {
        let e = images::split(&set, f, 0).unwrap_err().to_string();
        assert!(e.contains("must be strictly between 0 and 1"), "{e}");
    }
    let e = numbered_set(3).split(0.2, 0).unwrap_err().to_string();
    assert!(
        e.contains("leaves 0 in the first part and 3 in the second"),
        "{e}"
    );
}

// ---------------------------------------------------------------- normalisation

#[test]
fn normalize_statistics_by_hand() {
    // Channel 0: pixels {0, 255, 0, 255} → scaled {0, 1, 0, 1}: mean ½, std ½.
    // Channel 1: pixels {51, 51, 102, 102} → {0.2, 0.2, 0.4, 0.4}: mean 0.3, std 0.1.
    let images =
        Array4::from_shape_vec((2, 2, 1, 2), vec![0, 255, 51, 51, 0, 255, 102, 102]).unwrap();
    let set = ImageSet::new("h", images, vec![0, 0], 1, 255).unwrap();
    let n = Normalize::from_data(&set).unwrap();
    assert!(
        (n.mean[0] - 0.5).abs() < 1e-7 && (n.std[0] - 0.5).abs() < 1e-7,
        "{n:?}"
    );
    assert!(
        (n.mean[1] - 0.3).abs() < 1e-7 && (n.std[1] - 0.1).abs() < 1e-7,
        "{n:?}"
    );

    // Digits scale: pixel 8 of 16 is 0.5; with mean 0.25, std 0.5 it becomes 0.5.
    let d = ImageSet::new("d", Array4::from_elem((1, 1, 1, 1), 8), vec![0], 1, 16).unwrap();
    let norm = Normalize::new(vec![0.25], vec![0.5]).unwrap();
    let (x, y) = batch(&d, &[0], &norm, None, &mut Rng::seed(0)).unwrap();
    assert_eq!((x[[0, 0, 0, 0]], y), (0.5, vec![0]));

    let e = Normalize::from_data(&d).unwrap_err().to_string();
    assert!(
        e.contains("channel 0 is constant (every pixel is 8)"),
        "{e}"
    );
    let e = Normalize::new(vec![0.1, 0.2], vec![0.3])
        .unwrap_err()
        .to_string();
    assert!(e.contains("got 2 means and 1 stds"), "{e}");
    let e = Normalize::new(vec![0.1], vec![0.0])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("channel 0 has std 0, expected a finite number > 0"),
        "{e}"
    );
}

#[test]
fn normalized_batches_have_zero_mean_unit_std_per_channel() {
    // Three channels with different distributions.
    let mut rng = Rng::seed(5);
    let images = Array4::from_shape_fn((64, 3, 6, 5), |(_, c, _, _)| {
        let u = rng.uniform();
        match c {
            0 => (u * 256.0) as u8,
            1 => (u * u * 100.0) as u8,
            _ => 200 + (u * 56.0) as u8,
        }
    });
    let set = ImageSet::new("rgb", images, vec![0; 64], 1, 255).unwrap();
    let norm = Normalize::from_data(&set).unwrap();
    let all: Vec<usize> = (0..64).collect();
    let (x, _) = batch(&set, &all, &norm, None, &mut Rng::seed(0)).unwrap();
    assert_eq!(x.dim(), (64, 3, 6, 5));
    for c in 0..3 {
        let (m, s) = channel_stats(&x, c);
        assert!(
            m.abs() < 1e-5 && (s - 1.0).abs() < 1e-5,
            "channel {c}: mean {m} std {s}"
        );
    }
    // Same on the real digits (pixel max 16).
    let digits = ImageSet::digits_embedded();
    let norm = Normalize::from_data(&digits).unwrap();
    let all: Vec<usize> = (0..digits.len()).collect();
    let (x, y) = batch(&digits, &all, &norm, None, &mut Rng::seed(0)).unwrap();
    let (m, s) = channel_stats(&x, 0);
    assert!(
        m.abs() < 1e-5 && (s - 1.0).abs() < 1e-5,
        "digits: mean {m} std {s}"
    );
    assert_eq!(y, digits.labels());
    // Scaled by 16: a pixel 16 maps to (1 − mean)/std.
    let i = digits.images().iter().position(|&p| p == 16).unwrap();
    let want = (1.0 - norm.mean[0]) / norm.std[0];
    assert!((x.as_slice().unwrap()[i] - want).abs() < 1e-6);
}

// ---------------------------------------------------------------- augmentation

/// 1 channel, 4×5, pixel (y, x) = 10y + x + 1 (no zeros, so 0 means padding).
fn ramp() -> Array3<u8> {
    Array3::from_shape_fn((1, 4, 5), |(_, y, x)| (10 * y + x + 1) as u8)
}

#[test]
fn crop_and_flip_move_pixels_to_the_expected_positions() {
    let img = ramp();
    let aug = Augment {
        crop_padding: Some(2),
        hflip: true,
    };
    // dy = dx = p: the original image.
    let same = aug.apply(
        img.view(),
        AugmentDraw {
            dy: 2,
            dx: 2,
            flip: false,
        },
    );
    assert_eq!(same, img);
    // dy = 3, dx = 1 (p = 2): out[y, x] = in[y + 1, x − 1], zero where outside.
    let shifted = aug.apply(
        img.view(),
        AugmentDraw {
            dy: 3,
            dx: 1,
            flip: false,
        },
    );
    assert_eq!(
        shifted,
        array![[
            [0, 11, 12, 13, 14],
            [0, 21, 22, 23, 24],
            [0, 31, 32, 33, 34],
            [0, 0, 0, 0, 0]
        ]]
    );
    // The same window, mirrored.
    let flipped = aug.apply(
        img.view(),
        AugmentDraw {
            dy: 3,
            dx: 1,
            flip: true,
        },
    );
    assert_eq!(
        flipped,
        array![[
            [14, 13, 12, 11, 0],
            [24, 23, 22, 21, 0],
            [34, 33, 32, 31, 0],
            [0, 0, 0, 0, 0]
        ]]
    );
    // Flip alone; the extreme corner offset keeps only one pixel.
    let flip_only = Augment {
        crop_padding: None,
        hflip: true,
    };
    let f = flip_only.apply(
        img.view(),
        AugmentDraw {
            dy: 0,
            dx: 0,
            flip: true,
        },
    );
    assert_eq!(
        f.index_axis(ndarray::Axis(0), 0).row(0).to_vec(),
        vec![5, 4, 3, 2, 1]
    );
    let corner = aug.apply(
        img.view(),
        AugmentDraw {
            dy: 0,
            dx: 4,
            flip: false,
        },
    );
    assert_eq!(
        corner,
        array![[
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
            [3, 4, 5, 0, 0],
            [13, 14, 15, 0, 0]
        ]]
    );
    // Every channel moves together.
    let two = Array3::from_shape_fn((2, 4, 5), |(c, y, x)| (100 * c + 10 * y + x + 1) as u8);
    let t = aug.apply(
        two.view(),
        AugmentDraw {
            dy: 3,
            dx: 1,
            flip: false,
        },
    );
    assert_eq!(t[[1, 0, 1]], 111);
    assert_eq!(t[[1, 3, 2]], 0);
}

#[test]
fn batch_applies_the_drawn_augmentation_and_keeps_shape() {
    let images =
        Array4::from_shape_fn((3, 1, 4, 5), |(i, _, y, x)| (50 * i + 10 * y + x + 1) as u8);
    let set = ImageSet::new("ramps", images, vec![0, 1, 0], 2, 255).unwrap();
    let aug = Augment {
        crop_padding: Some(2),
        hflip: true,
    };
    let id = Normalize::identity(1);
    let idx = [2, 0, 2, 1];
    let (x, y) = batch(&set, &idx, &id, Some(&aug), &mut Rng::seed(9)).unwrap();
    assert_eq!(x.dim(), (4, 1, 4, 5));
    assert_eq!(y, vec![0, 0, 0, 1]);
    // One draw per image, in batch order, from the same generator.
    let mut rng = Rng::seed(9);
    for (b, &i) in idx.iter().enumerate() {
        let d = aug.draw(&mut rng);
        let want = aug.apply(set.image(i).unwrap(), d);
        for ((_, yy, xx), &p) in want.indexed_iter() {
            assert_eq!(x[[b, 0, yy, xx]], f32::from(p) / 255.0, "b {b} draw {d:?}");
        }
    }
    // Same seed, same batch.
    let (x2, _) = batch(&set, &idx, &id, Some(&aug), &mut Rng::seed(9)).unwrap();
    assert_eq!(x, x2);
    // Padding is pixel 0 before normalisation: (0 − mean)/std.
    let norm = Normalize::new(vec![0.5], vec![0.25]).unwrap();
    let corner = Augment {
        crop_padding: Some(4),
        hflip: false,
    };
    let mut r = Rng::seed(1);
    let mut found_pad = false;
    for _ in 0..20 {
        let (xb, _) = batch(&set, &[0], &norm, Some(&corner), &mut r).unwrap();
        found_pad |= xb.iter().any(|&v| v == -2.0);
    }
    assert!(found_pad);

    // CIFAR-shaped set with the CIFAR recipe.
    let cifar = ImageSet::new(
        "c",
        Array4::from_elem((2, 3, 32, 32), 7),
        vec![1, 2],
        10,
        255,
    )
    .unwrap();
    let (xc, _) = batch(
        &cifar,
        &[1, 0],
        &Normalize::identity(3),
        Some(&Augment::cifar10()),
        &mut Rng::seed(2),
    )
    .unwrap();
    assert_eq!(xc.dim(), (2, 3, 32, 32));
}

#[test]
fn augment_draws_cover_all_offsets_and_flip_half_the_time() {
    let aug = Augment::cifar10();
    let mut rng = Rng::seed(3);
    let mut dy = [0usize; 9];
    let mut dx = [0usize; 9];
    let mut flips = 0;
    let n = 9000;
    for _ in 0..n {
        let d = aug.draw(&mut rng);
        dy[d.dy] += 1;
        dx[d.dx] += 1;
        flips += usize::from(d.flip);
    }
    // Uniform over 0..=8: 1000 each.
    assert!(
        dy.iter().chain(&dx).all(|&c| (850..1150).contains(&c)),
        "{dy:?} {dx:?}"
    );
    assert!((4300..4700).contains(&flips), "{flips}");
    // MNIST recipe: pad 2, never flips; no augmentation draws nothing.
    let m = Augment::mnist();
    assert_eq!((m.crop_padding, m.hflip), (Some(2), false));
    assert!((0..200).all(|_| {
        let d = m.draw(&mut rng);
        d.dy <= 4 && d.dx <= 4 && !d.flip
    }));
    let before = rng.clone();
    assert_eq!(Augment::none().draw(&mut rng), AugmentDraw::default());
    assert_eq!(rng, before);
}

#[test]
fn batch_rejects_bad_indices_and_channel_mismatch() {
    let set = numbered_set(4);
    let id = Normalize::identity(1);
    let mut rng = Rng::seed(0);
    let e = batch(&set, &[], &id, None, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("images::batch: invalid indices: a batch needs at least one image"),
        "{e}"
    );
    let e = batch(&set, &[0, 4], &id, None, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("index 4 at position 1 is out of range for a set of 4 images"),
        "{e}"
    );
    let e = batch(&set, &[0], &Normalize::identity(3), None, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("numbered has 1 channels but the normalisation has 3"),
        "{e}"
    );
    let bad = Normalize {
        mean: vec![0.0],
        std: vec![-1.0],
    };
    let e = batch(&set, &[0], &bad, None, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(e.contains("channel 0 has std -1"), "{e}");
}

// ---------------------------------------------------------------- epochs

#[test]
fn epoch_batches_cover_every_index_once() {
    let mut rng = Rng::seed(21);
    let epoch = EpochBatches::new(103, 10, true, &mut rng).unwrap();
    assert_eq!(epoch.len(), 11);
    let batches: Vec<Vec<usize>> = epoch.collect();
    assert_eq!(batches.len(), 11);
    assert!(batches[..10].iter().all(|b| b.len() == 10));
    assert_eq!(batches[10].len(), 3);
    let mut all: Vec<usize> = batches.concat();
    assert_ne!(all, (0..103).collect::<Vec<_>>(), "shuffled");
    all.sort_unstable();
    assert_eq!(all, (0..103).collect::<Vec<_>>());

    // drop_last: 10 full batches, 100 distinct indices.
    let mut e = EpochBatches::new(103, 10, true, &mut rng)
        .unwrap()
        .drop_last(true);
    assert_eq!(e.len(), 10);
    let first = e.next().unwrap();
    assert_eq!(e.len(), 9);
    let rest: Vec<usize> = e.flatten().collect();
    let mut got = [first, rest].concat();
    assert_eq!(got.len(), 100);
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), 100);
    // Exact multiple: drop_last changes nothing.
    assert_eq!(
        EpochBatches::new(20, 10, true, &mut rng)
            .unwrap()
            .drop_last(true)
            .count(),
        2
    );

    // Unshuffled: in order, and the generator is untouched.
    let before = rng.clone();
    let plain: Vec<Vec<usize>> = EpochBatches::new(5, 2, false, &mut rng).unwrap().collect();
    assert_eq!(plain, vec![vec![0, 1], vec![2, 3], vec![4]]);
    assert_eq!(rng, before);

    let e = EpochBatches::new(5, 0, true, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("EpochBatches::new: invalid batch_size: must be at least 1, got 0"),
        "{e}"
    );
}

#[test]
fn epoch_order_is_determined_by_the_seed() {
    let order = |seed| {
        EpochBatches::new(1000, 64, true, &mut Rng::seed(seed))
            .unwrap()
            .flatten()
            .collect::<Vec<_>>()
    };
    assert_eq!(order(4), order(4));
    assert_ne!(order(4), order(5));
    // The epoch is the generator's permutation.
    assert_eq!(order(4), Rng::seed(4).permutation(1000));
    // Successive epochs from one generator differ.
    let mut rng = Rng::seed(4);
    let e1 = EpochBatches::new(50, 8, true, &mut rng).unwrap();
    let e2 = EpochBatches::new(50, 8, true, &mut rng).unwrap();
    assert_ne!(e1.order(), e2.order());
}
