//! Keeps `memory-budget.md` true: its closed-form formula, its size tables and its kernel-side
//! ring figures are parsed from the file and checked against `size_of` and the running kernel.
//! If this fails after a change to the storage, update the document (formula, component table and
//! figures together), not this test.

use std::mem::size_of;

use static_uring::Storage;

const DOC: &str = include_str!("../memory-budget.md");

/// `size_of::<Storage<S, R, W>>()` for every shape the checks below know, as `(S, R, W, bytes)`.
macro_rules! shapes {
    ($(($s:literal, $r:literal, $w:literal)),* $(,)?) => {
        [$(($s, $r, $w, size_of::<Storage<$s, $r, $w>>())),*]
    };
}

fn known_shapes() -> Vec<(usize, usize, usize, usize)> {
    shapes![
        (1, 1, 2),
        (2, 1, 2),
        (4, 1, 8),
        (2, 2, 2),
        (8, 4, 64),
        (16, 16, 256),
        (64, 32, 1024),
        (128, 128, 128),
        (256, 128, 4096),
        (512, 64, 32768),
        (1024, 512, 2048),
        (4096, 1024, 16384),
        (8, 8, 65536),
        (65536, 4096, 4),
    ]
    .to_vec()
}

fn size_of_shape(s: usize, r: usize, w: usize) -> usize {
    known_shapes()
        .into_iter()
        .find(|&(ks, kr, kw, _)| (ks, kr, kw) == (s, r, w))
        .map(|(.., bytes)| bytes)
        .unwrap_or_else(|| {
            panic!("memory-budget.md lists Storage<{s}, {r}, {w}>: add it to known_shapes()")
        })
}

fn r8(x: usize) -> usize {
    x.div_ceil(8) * 8
}

/// The exact (rounded) component formula the document states, valid for every legal shape.
fn exact_formula(s: usize, r: usize, w: usize) -> usize {
    296 * s
        + (8 + r8(4 * s))
        + (16 + 8 * s)
        + 248
        + (24 + 24 * s)
        + 8 * s
        + r8((16 * s + 8 * w + 2072)
            + r8(4 * r + 16)
            + (8 * r + 16)
            + 9 * s
            + 16 * s
            + 152 * r
            + r8(2 * r + 8)
            + 136
            + (8 + r8(4 * s))
            + (16 * s + 56))
}

/// Table cells of a markdown row, trimmed.
fn cells(line: &str) -> Vec<&str> {
    let line = line.trim().trim_start_matches('|').trim_end_matches('|');
    line.split('|').map(str::trim).collect()
}

fn number(cell: &str) -> usize {
    cell.parse()
        .unwrap_or_else(|_| panic!("expected a plain number, found {cell:?}"))
}

/// The first unsigned integer in `text`.
fn first_number(text: &str) -> usize {
    let digits: String = text
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    number(&digits)
}

/// `Storage<64, 32, 1024>` -> (64, 32, 1024).
fn parse_shape(cell: &str) -> (usize, usize, usize) {
    let inner = cell
        .strip_prefix("Storage<")
        .and_then(|rest| rest.strip_suffix('>'))
        .unwrap_or_else(|| panic!("bad shape cell {cell:?}"));
    let parts: Vec<usize> = inner.split(',').map(|p| number(p.trim())).collect();
    assert_eq!(parts.len(), 3, "bad shape cell {cell:?}");
    (parts[0], parts[1], parts[2])
}

/// The coefficients `(a, b, c, d)` of `a*SLOTS + b*RING + c*WHEEL + d` from the formula line.
fn closed_form() -> (usize, usize, usize, usize) {
    const PREFIX: &str = "size_of::<Storage<SLOTS, RING, WHEEL>>() =";
    let line = DOC
        .lines()
        .find_map(|line| line.trim().strip_prefix(PREFIX))
        .expect("memory-budget.md has the closed-form formula line");
    let mut coefficients = [None; 4];
    for term in line.split('+').map(str::trim) {
        match term.split_once('*') {
            Some((k, "SLOTS")) => coefficients[0] = Some(number(k.trim())),
            Some((k, "RING")) => coefficients[1] = Some(number(k.trim())),
            Some((k, "WHEEL")) => coefficients[2] = Some(number(k.trim())),
            Some(_) => panic!("unknown term {term:?}"),
            None => coefficients[3] = Some(number(term)),
        }
    }
    let [a, b, c, d] = coefficients.map(|k| k.expect("every term of the formula is present"));
    (a, b, c, d)
}

/// Kernel ring regions for `RING` SQ entries, as the document states them (RING >= 2).
fn rings_region(ring: usize) -> usize {
    36 * ring + 64
}

fn sqe_array(ring: usize) -> usize {
    64 * ring
}

fn pages(bytes: usize) -> usize {
    bytes.div_ceil(4096)
}

fn contiguous_pages(ring: usize) -> usize {
    pages(rings_region(ring)).next_power_of_two() + pages(sqe_array(ring)).next_power_of_two()
}

fn fallback_pages(ring: usize) -> usize {
    pages(rings_region(ring)) + pages(sqe_array(ring))
}

#[test]
fn closed_form_matches_size_of() {
    let (a, b, c, d) = closed_form();
    let mut checked = 0;
    for (s, r, w, bytes) in known_shapes() {
        assert_eq!(
            exact_formula(s, r, w),
            bytes,
            "exact formula of memory-budget.md for Storage<{s}, {r}, {w}>"
        );
        if s >= 8 && r >= 4 {
            assert_eq!(
                a * s + b * r + c * w + d,
                bytes,
                "closed form of memory-budget.md for Storage<{s}, {r}, {w}>"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8);
}

#[test]
fn size_tables_match_size_of() {
    let mut sizes = Vec::new();
    let mut breakdowns = 0;
    for line in DOC
        .lines()
        .filter(|l| l.trim_start().starts_with("| Storage<"))
    {
        let row = cells(line);
        let (s, r, w) = parse_shape(row[0]);
        let bytes = size_of_shape(s, r, w);
        match row.len() {
            // | shape | size_of | KiB | kernel rings |
            4 => {
                assert_eq!(number(row[1]), bytes, "size_of in row {line:?}");
                assert_eq!(
                    row[2],
                    format!("{:.1}", bytes as f64 / 1024.0),
                    "KiB in {line:?}"
                );
                assert_eq!(
                    first_number(row[3]),
                    contiguous_pages(r) * 4,
                    "kernel KiB in {line:?}"
                );
                sizes.push((s, r, w));
            }
            // | shape | slots | free list, ring, flags | wheel | queues, headers | rest |
            6 => {
                let parts: Vec<usize> = row[1..].iter().map(|c| number(c)).collect();
                let expected = [
                    296 * s,
                    89 * s + 112,
                    16 * s + 8 * w + 2072,
                    166 * r + 40,
                    384,
                ];
                assert_eq!(parts, expected, "breakdown in {line:?}");
                assert_eq!(parts.iter().sum::<usize>(), bytes, "breakdown sum {line:?}");
                breakdowns += 1;
            }
            n => panic!("unexpected {n}-column row {line:?}"),
        }
    }
    for required in [(64, 32, 1024), (256, 128, 4096), (4096, 1024, 16384)] {
        assert!(
            sizes.contains(&required),
            "memory-budget.md must list Storage<{}, {}, {}>",
            required.0,
            required.1,
            required.2
        );
    }
    assert_eq!(
        breakdowns,
        sizes.len(),
        "every listed shape has its breakdown"
    );
}

/// `io_uring_params` as the kernel defines it: 120 bytes, read here as 30 `u32`s.
/// Index 0: sq_entries, 1: cq_entries, 16: sq_off.array, 25: cq_off.cqes.
fn kernel_ring_layout(entries: u32) -> Option<[u32; 30]> {
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup reads and writes a 120-byte `io_uring_params` at the pointer, which
    // is our zeroed, 4-aligned 120-byte array; flags 0 asks for a plain ring.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, entries, params.as_mut_ptr()) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is the ring descriptor just returned to us and closed once, here.
    unsafe { libc::close(fd as libc::c_int) };
    Some(params)
}

#[test]
fn kernel_ring_table_matches_the_kernel() {
    let mut rows = 0;
    for line in DOC
        .lines()
        .filter(|l| l.trim_start().starts_with("| RING = "))
    {
        let row = cells(line);
        assert_eq!(row.len(), 6, "kernel row {line:?}");
        let ring = first_number(row[0]);
        let (sq, cq, region, sqes) = (
            number(row[1]),
            number(row[2]),
            number(row[3]),
            number(row[4]),
        );
        assert_eq!((sq, cq), (ring, 2 * ring), "entries in {line:?}");
        assert_eq!(region, rings_region(ring), "rings region in {line:?}");
        assert_eq!(sqes, sqe_array(ring), "SQE array in {line:?}");
        let (contiguous, fallback) = row[5]
            .split_once('(')
            .unwrap_or_else(|| panic!("pages cell {line:?}"));
        assert_eq!(first_number(contiguous), contiguous_pages(ring), "{line:?}");
        assert_eq!(first_number(fallback), fallback_pages(ring), "{line:?}");
        rows += 1;

        // The running kernel agrees (where io_uring is available at all).
        let Some(params) = kernel_ring_layout(ring as u32) else {
            eprintln!("io_uring_setup unavailable: kernel layout not checked");
            continue;
        };
        assert_eq!(params[0] as usize, sq, "kernel SQ entries");
        assert_eq!(params[1] as usize, cq, "kernel CQ entries");
        let (array, cqes) = (params[16] as usize, params[25] as usize);
        if cqes != 64 {
            eprintln!("this kernel's ring header is {cqes} bytes, not the documented 64");
            continue;
        }
        assert_eq!(array, 64 + 32 * ring, "kernel sq_off.array");
        assert_eq!(array + 4 * ring, region, "kernel rings region");
    }
    assert!(
        rows >= 3,
        "memory-budget.md lists the kernel rings of the three shapes"
    );
}

/// The lane's formula, as the document writes it, against `size_of`.
#[test]
fn lane_formula_matches_size_of() {
    use static_uring::Lane;
    const FORMULA: &str = "`size_of::<Lane<SLOTS>>() = 128 + round_up(4*SLOTS + 13, 64)` bytes";
    assert!(
        DOC.contains(FORMULA),
        "memory-budget.md states the lane formula"
    );
    let formula = |slots: usize| 128 + (4 * slots + 13).div_ceil(64) * 64;
    let sizes = [
        (1, size_of::<Lane<1>>()),
        (8, size_of::<Lane<8>>()),
        (16, size_of::<Lane<16>>()),
        (64, size_of::<Lane<64>>()),
        (256, size_of::<Lane<256>>()),
        (1000, size_of::<Lane<1000>>()),
        (4096, size_of::<Lane<4096>>()),
    ];
    for (slots, bytes) in sizes {
        assert_eq!(bytes, formula(slots), "Lane<{slots}>");
    }
    // The worked example in the text.
    assert!(
        DOC.contains("1 216 bytes"),
        "memory-budget.md gives Lane<256>'s size"
    );
    assert_eq!(size_of::<Lane<256>>(), 1216);
}

/// The task pool's formula, as the document writes it, against `size_of`.
#[test]
fn task_pool_formula_matches_size_of() {
    use static_uring::TaskPool;
    use std::future::{Future, Ready};
    use std::pin::Pin;
    const FORMULA: &str =
        "`size_of::<TaskPool<F, N>>() = 56 + N * (16 + round_up(40 + size_of::<F>(), 8))` bytes";
    assert!(
        DOC.contains(FORMULA),
        "memory-budget.md states the task pool formula"
    );
    type Boxed = Pin<Box<dyn Future<Output = ()>>>;
    let formula = |n: usize, f: usize| 56 + n * (16 + (40 + f).div_ceil(8) * 8);
    let sizes = [
        (
            1,
            size_of::<Ready<()>>(),
            size_of::<TaskPool<Ready<()>, 1>>(),
        ),
        (
            64,
            size_of::<Ready<()>>(),
            size_of::<TaskPool<Ready<()>, 64>>(),
        ),
        (
            100,
            size_of::<Ready<()>>(),
            size_of::<TaskPool<Ready<()>, 100>>(),
        ),
        (1, size_of::<Boxed>(), size_of::<TaskPool<Boxed, 1>>()),
        (64, size_of::<Boxed>(), size_of::<TaskPool<Boxed, 64>>()),
        (
            3,
            size_of::<Ready<[u64; 5]>>(),
            size_of::<TaskPool<Ready<[u64; 5]>, 3>>(),
        ),
    ];
    for (n, f, bytes) in sizes {
        assert_eq!(bytes, formula(n, f), "TaskPool of {n} futures of {f} bytes");
    }
    // The worked example in the text.
    assert!(
        DOC.contains("4 664 bytes"),
        "memory-budget.md gives the 64-task pool's size"
    );
    assert_eq!(size_of::<TaskPool<Boxed, 64>>(), 4664);
}
