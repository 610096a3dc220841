//! Phone and camera files through `imgpipe process`, the whole pipeline: a rotated, P3-tagged
//! HEIC and AVIF come out upright and in sRGB by default; renditions with `colorProfile: keep` carry
//! the Display P3 profile in WebP, PNG and AVIF; the record keeps the source's profile; a
//! transparent PNG takes `--background`; a camera RAW in the folder is rejected by name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../imaging/tests/support/photos.rs"]
mod photos;

use std::path::Path;
use std::process::{Command, Output};

use imaging::Limits;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_imgpipe");

fn imgpipe(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn phone_photos_come_out_upright_in_srgb_or_kept_and_raws_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let shoot = tmp.path().join("shoot");
    std::fs::create_dir_all(&shoot).unwrap();
    std::fs::copy(
        photos::dir().join("p3-rot6.heic"),
        shoot.join("IMG_0001.HEIC"),
    )
    .unwrap();
    std::fs::copy(
        photos::dir().join("p3-rot6.avif"),
        shoot.join("IMG_0003.avif"),
    )
    .unwrap();
    // A Canon CR2 header: the folder scan must report it, not skip it.
    let mut cr2 = b"II*\0\x10\0\0\0CR\x02\0\0\0\0\0".to_vec();
    cr2.extend_from_slice(&[0; 256]);
    std::fs::write(shoot.join("IMG_0002.CR2"), cr2).unwrap();
    let recipe = tmp.path().join("recipe.json");
    std::fs::write(
        &recipe,
        r#"{"renditions": [
            {"name": "web", "resize": {"width": 240, "height": 160}, "format": "png"},
            {"name": "p3", "resize": {"width": 240, "height": 160}, "format": "webp", "colorProfile": "keep"},
            {"name": "p3png", "format": "png", "colorProfile": "keep"},
            {"name": "p3avif", "resize": {"width": 240}, "format": "avif", "colorProfile": "keep"}
        ]}"#,
    )
    .unwrap();
    let out = imgpipe(
        &[
            "process",
            "shoot",
            "--recipe",
            "recipe.json",
            "--out",
            "out",
            "--json",
        ],
        tmp.path(),
    );
    let doc = json(&out);
    assert_eq!(out.status.code(), Some(1), "a rejected file makes exit 1");
    let files = doc["results"].as_array().unwrap();
    assert_eq!(files.len(), 3, "{doc:#}");
    let raw = files
        .iter()
        .find(|f| f["input"].as_str().unwrap().ends_with("IMG_0002.CR2"))
        .unwrap();
    assert_eq!(raw["status"], "REJECTED");
    let message = raw["error"]["message"].as_str().unwrap();
    assert!(message.contains("Canon CR2 RAW"), "{message}");
    assert_eq!(raw["error"]["type"], "UnsupportedFormat");

    let limits = Limits::default();
    let out_dir = tmp.path().join("out");
    let truth = imaging::decode(&photos::read("truth.png"), &limits, None).unwrap();
    let truth = imaging::resize_exact(&truth, 240, 160).unwrap().to_rgb8();
    for source in ["IMG_0001", "IMG_0003"] {
        // PNG, so the comparison sees the colour handling and not a second lossy coding.
        let web = std::fs::read(out_dir.join(format!("{source}-web.png"))).unwrap();
        let h = imaging::probe(&web, &limits).unwrap();
        assert_eq!((h.width, h.height), (240, 160), "{source} upright");
        assert!(h.color_profile.is_none(), "sRGB outputs carry no profile");
        // Its pixels are the sRGB truth's.
        let got = imaging::decode(&web, &limits, None).unwrap().to_rgb8();
        let mean = got
            .as_raw()
            .iter()
            .zip(truth.as_raw())
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / got.as_raw().len() as f64;
        assert!(
            mean <= 1.2,
            "{source}: mean difference {mean:.2} from the sRGB truth"
        );
    }

    let icc = photos::read("display-p3.icc");
    for name in [
        "IMG_0001-p3.webp",
        "IMG_0001-p3png.png",
        "IMG_0001-p3avif.avif",
        "IMG_0003-p3avif.avif",
    ] {
        let bytes = std::fs::read(out_dir.join(name)).unwrap();
        let format = imaging::sniff(&bytes).unwrap();
        let p = imaging::source_profile(&bytes, format).expect(name);
        assert_eq!(p.icc_to_embed(), Some(&icc[..]), "{name}");
        assert_eq!(p.info.description, "Display P3");
    }

    // The records keep what the sources said of their colours.
    let history = json(&imgpipe(
        &["history", "--json", "--status", "COMPLETE"],
        tmp.path(),
    ));
    let records = history["images"]
        .as_array()
        .or(history.as_array())
        .cloned()
        .unwrap_or_else(|| panic!("{history:#}"));
    let mut formats: Vec<&str> = records
        .iter()
        .map(|r| r["source"]["format"].as_str().unwrap())
        .collect();
    formats.sort_unstable();
    assert_eq!(formats, ["avif", "heic"], "{history:#}");
    for record in &records {
        assert_eq!(
            record["source"]["colorProfile"]["description"],
            "Display P3"
        );
        assert_eq!(record["source"]["colorProfile"]["srgb"], false);
    }
}

#[test]
fn transparent_areas_take_the_background_in_jpeg() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        photos::dir().join("transparent.png"),
        tmp.path().join("logo.png"),
    )
    .unwrap();
    let out = imgpipe(
        &[
            "process",
            "logo.png",
            "--format",
            "jpeg",
            "--background",
            "#0000ff",
            "--out",
            "out",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let jpeg = std::fs::read(tmp.path().join("out/logo-out.jpg")).unwrap();
    let img = imaging::decode(&jpeg, &Limits::default(), None)
        .unwrap()
        .to_rgb8();
    let [r, g, b] = img.get_pixel(1, 1).0;
    assert!(r < 10 && g < 10 && b > 245, "{r} {g} {b}");

    // A colour with alpha is refused by name: the background must be opaque.
    let out = imgpipe(
        &[
            "process",
            "logo.png",
            "--background",
            "#0000ff80",
            "--out",
            "out",
        ],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not opaque"));

    // With a preset, the option reaches every rendition rather than being dropped.
    let out = imgpipe(
        &[
            "process",
            "logo.png",
            "--preset",
            "web",
            "--background",
            "#ff0000",
            "--out",
            "preset-out",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let jpeg = std::fs::read(tmp.path().join("preset-out/logo-medium.jpg")).unwrap();
    let img = imaging::decode(&jpeg, &Limits::default(), None)
        .unwrap()
        .to_rgb8();
    let [r, g, b] = img.get_pixel(0, 0).0;
    assert!(r > 245 && g < 10 && b < 10, "{r} {g} {b}");
}
