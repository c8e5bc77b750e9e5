//! DLP's cost per MiB on clean bodies an agent sends: the deep inspection (every layer peeled,
//! the validated detectors) against the plain token scan it grew from, side by side.
//!
//! `cargo run --release -p bottle-dlp --example dlp-bench [NAME | FILE]` (NAME: only the bodies
//! whose name holds it, e.g. `json`, for a profile of one; FILE: that file's bytes instead).

use bottle_dlp::Scanner;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The system allocator, counting allocations: a scan's allocations cost most under the
/// static (musl) build egress ships, whose allocator is slow.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// A MiB of what a model API call with code in it looks like: JSON, prose, code, ids, URLs.
fn model_call_json(len: usize) -> Vec<u8> {
    let unit = concat!(
        r#"{"role":"user","content":"Please fix the failing test in src/parser.rs. The error is:\n"#,
        r#"thread 'parse_manifest_from_reader' panicked at src/parser.rs:42:9: called `Result::unwrap()`"#,
        r#" on an `Err` value: ParseError { line: 3, column: 7 }\nSee https://docs.rs/serde_yaml/0.9.34/"#,
        r#"serde_yaml/fn.from_reader.html and commit 3f2b8c1e9a4d4e6f8b2a1c5d7e9f0a3b4c5d6e7f (build "#,
        r#"3f2b8c1e-9a4d-4e6f-8b2a-1c5d7e9f0a3b).\nfn main() {\n    let token = std::env::var(\"GITHUB_TOKEN\")?;\n"#,
        r#"    let config = Config::from_path(&args.config_path).context(\"reading the config\")?;\n}"}"#,
        ",\n"
    );
    unit.as_bytes().iter().copied().cycle().take(len).collect()
}

/// The best of five batches of ten scans: noise on the machine only ever adds time.
fn per_mib(label: &str, body: &[u8], f: impl Fn(&[u8]) -> bool) -> f64 {
    let rounds = 10;
    assert!(!f(body), "{label}: the clean body gave a finding");
    let ms = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(f(std::hint::black_box(body)));
            }
            t.elapsed().as_secs_f64() * 1000.0
                / rounds as f64
                / (body.len() as f64 / (1 << 20) as f64)
        })
        .fold(f64::INFINITY, f64::min);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    f(body);
    let allocations = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64
        / (body.len() as f64 / (1 << 20) as f64);
    println!("{label:<44} {ms:7.2} ms/MiB {allocations:8.0} allocations/MiB");
    ms
}

fn main() {
    let scanner = Scanner::new(&[bottle_dlp::KnownSecret::new(
        "EGRESS_TOKEN_0",
        "real-t0ken-from-the-host-7c1d",
    )]);
    let json = model_call_json(1 << 20);
    let prose: Vec<u8> = b"The quick brown fox jumps over the lazy dog. "
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect();
    let image: Vec<u8> = {
        use base64::Engine;
        let mut x = 7u32;
        let raw: Vec<u8> = (0..(3 << 18))
            .map(|_| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        base64::engine::general_purpose::STANDARD
            .encode(raw)
            .into_bytes()
    };
    let only = std::env::args().nth(1).unwrap_or_default().to_lowercase();
    let file = std::fs::read(&only).ok();
    let bodies = match &file {
        Some(bytes) => vec![(only.as_str(), bytes)],
        None => vec![
            ("model call JSON with code", &json),
            ("prose", &prose),
            ("base64 image", &image),
        ],
    };
    for (name, body) in bodies {
        if !name.to_lowercase().contains(&only) {
            continue;
        }
        let scan = per_mib(&format!("{name}: token scan (baseline)"), body, |b| {
            scanner.scan(b).is_some()
        });
        let deep = per_mib(&format!("{name}: inspect (every layer)"), body, |b| {
            scanner.inspect(b).is_some()
        });
        println!(
            "{:<44} {:7.2}x the baseline, +{:.2} ms/MiB",
            format!("{name}: ratio"),
            deep / scan,
            deep - scan
        );
    }
    // What egress does first with a gzip'd body: undo the encoding (per MiB it decodes to).
    if file.is_none() && "model call json gzip'd".contains(&only) {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&json).expect("gzip in memory");
        let gz = gz.finish().expect("gzip in memory");
        per_mib("model call JSON gzip'd: gunzip", &json, |_| {
            bottle_dlp::content::decode_content(&gz, "gzip", 64 << 20).is_err()
        });
        // As egress does it: into the buffer the body before left behind.
        let spare = std::cell::Cell::new(Vec::new());
        per_mib("model call JSON gzip'd: gunzip, buffer kept", &json, |_| {
            match bottle_dlp::content::decode_content_into(&gz, "gzip", 64 << 20, spare.take()) {
                Ok(out) => {
                    spare.set(out);
                    false
                }
                Err(_) => true,
            }
        });
    }
}
