//! A new user's tokio application reading a file through static-uring at depth 32, with `?`
//! throughout: the loop runs on its own thread, 32 tokio tasks each keep one 4 KiB `read_at`
//! in flight (`BufError` converts into `io::Error`), and the program prints reads per second.
//!
//! ```text
//! cargo run --release --example tokio_reads [reads]
//! ```

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use static_uring::{Config, Fd, Handle, IoBufMut};

const DEPTH: usize = 32;
const BLOCK: usize = 4096;
const BLOCKS: u64 = 4096; // a 16 MiB file

type Io = Handle<64, 32, 1024>;

/// Reads `count` blocks, a stride of the file, one at a time.
async fn reader(io: Io, file: Fd, first: u64, count: usize) -> std::io::Result<u64> {
    let mut buf = IoBufMut::with_capacity(BLOCK);
    let mut sum = 0u64;
    for i in 0..count as u64 {
        let block = (first + i * DEPTH as u64) % BLOCKS;
        buf = io.read_at(&file, block * BLOCK as u64, buf).await?;
        sum += u64::from(buf[0]);
    }
    Ok(sum)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reads: usize = std::env::args().nth(1).map_or(Ok(200_000), |s| s.parse())?;
    let path = std::env::temp_dir().join(format!("tokio-reads-{}", std::process::id()));
    let mut file = std::fs::File::create(&path)?;
    for block in 0..BLOCKS {
        file.write_all(&[block as u8; BLOCK])?;
    }
    let file = Fd::from(Arc::new(std::fs::File::open(&path)?));
    let (io, event_loop) = static_uring::new::<64, 32, 1024>(Config::default())?;
    let loop_thread = event_loop.spawn("io")?;

    let start = Instant::now();
    let tasks: Vec<_> = (0..DEPTH)
        .map(|k| tokio::spawn(reader(io.clone(), file.clone(), k as u64, reads / DEPTH)))
        .collect();
    let mut sum = 0;
    for task in tasks {
        sum += task.await??;
    }
    let rate = (reads / DEPTH * DEPTH) as f64 / start.elapsed().as_secs_f64();
    println!("tokio_reads: {rate:.0} reads/s of 4 KiB at depth {DEPTH} (checksum {sum})");
    drop(io);
    loop_thread.join().expect("the loop thread")?;
    std::fs::remove_file(&path)?;
    Ok(())
}
