//! Behaviour of the image readers on real files: a folder of PNG and JPEG pictures written
//! here, the bad inputs a user can give (a corrupt file, an empty folder, a size that is not
//! a power of two), and Fashion-MNIST from Debian's package (installed by `.ci/run`).

use image::{ImageBuffer, Luma, Rgb};
use nrg_images::folder::{Channels, Fit, FolderOptions, read_folder};
use nrg_images::idx::{Split, fashion_mnist};

/// A 48×32 RGB gradient (red along x, green along y, blue 77) saved as `name`.
fn write_picture(dir: &std::path::Path, name: &str) {
    let img = ImageBuffer::from_fn(48, 32, |x, y| Rgb([(x * 5) as u8, (y * 7) as u8, 77u8]));
    img.save(dir.join(name)).unwrap();
}

#[test]
fn folders_of_pictures_read_as_squares_of_a_power_of_two() {
    let dir = tempfile::tempdir().unwrap();
    write_picture(dir.path(), "b.png");
    write_picture(dir.path(), "a.JPG");
    std::fs::write(dir.path().join("notes.txt"), "not a picture").unwrap();
    // A 16×16 gray picture kept as it is.
    let gray = ImageBuffer::from_fn(16, 16, |x, y| Luma([(x * 16 + y) as u8]));
    gray.save(dir.path().join("c.png")).unwrap();

    let rgb = FolderOptions {
        channels: Channels::Rgb,
        size: 16,
        fit: Fit::CenterCrop,
    };
    let set = read_folder(dir.path(), &rgb).unwrap();
    assert_eq!(
        set.shape,
        [3, 3, 16, 16],
        "three pictures, name order, txt skipped"
    );
    // The PNG (second in name order): blue is 77 everywhere after resizing; green grows down
    // the rows, red along the columns.
    let png = set.image(1);
    assert!(png[2 * 256..].iter().all(|&b| b == 77));
    assert!(png[256 + 15 * 16] > png[256]);
    assert!(png[15] > png[0]);
    // The 16×16 gray picture survives RGB conversion unchanged in each channel.
    let c = set.image(2);
    assert_eq!(c[17], 16 + 1);
    assert_eq!(&c[..256], &c[256..512]);

    let gray_opts = FolderOptions {
        channels: Channels::Gray,
        size: 8,
        fit: Fit::Resize,
    };
    let set = read_folder(dir.path(), &gray_opts).unwrap();
    assert_eq!(set.shape, [3, 1, 8, 8]);
    assert_eq!(set.real_dims, 64);

    // Bad inputs: a size that is not a power of two, a corrupt picture (named), an empty
    // folder, a missing one.
    let odd = FolderOptions { size: 24, ..rgb };
    assert!(
        read_folder(dir.path(), &odd)
            .unwrap_err()
            .to_string()
            .contains("power of two")
    );
    std::fs::write(dir.path().join("d.png"), b"\x89PNG broken").unwrap();
    let err = read_folder(dir.path(), &rgb).unwrap_err().to_string();
    assert!(err.contains("d.png"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = read_folder(empty.path(), &rgb).unwrap_err().to_string();
    assert!(err.contains("no PNG or JPEG"), "{err}");
    assert!(read_folder(&empty.path().join("none"), &rgb).is_err());
}

/// The test split of Fashion-MNIST: 10 000 images padded to 32×32 (a 2-pixel zero border,
/// 784 real pixels), ten classes of 1000 each, and pixel statistics of the dataset (the mean
/// level of the test split is 72.9 on the 0–255 scale: the published 0.2860 for the training
/// split, with the test split within 0.01 of it).
#[test]
fn fashion_mnist_reads_padded_with_labels() {
    let set = fashion_mnist(None, Split::Test).unwrap();
    assert_eq!(set.shape, [10_000, 1, 32, 32]);
    assert_eq!(set.real_dims, 784);
    let labels = set.labels.as_ref().unwrap();
    for class in 0..10u8 {
        assert_eq!(labels.iter().filter(|&&l| l == class).count(), 1000);
    }
    for i in [0, 4321, 9999] {
        let img = set.image(i);
        for r in 0..32 {
            for c in 0..32 {
                if !(2..30).contains(&r) || !(2..30).contains(&c) {
                    assert_eq!(img[r * 32 + c], 0, "border of image {i}");
                }
            }
        }
    }
    let mean: f64 = set.pixels.iter().map(|&v| v as f64).sum::<f64>() / (10_000.0 * 784.0);
    assert!((mean / 255.0 - 0.286).abs() < 0.01, "mean level {mean}");
}
