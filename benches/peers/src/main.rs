//! `peers`: the runtimes static-uring is compared against, measured through their public APIs,
//! one JSON line per cell on stdout (see README.md).
//!
//! This binary runs tokio-uring 0.5, monoio 0.2 (io_uring driver) and commonware-runtime 2026.10.0 (native io_uring runner,
//! one and two workers) in process, then commonware-runtime 2026.4.0 through the separately built
//! `peers-2026-4` binary (Cargo cannot resolve two semver-compatible versions of one crate in one
//! lockfile, so that version lives in its own workspace, `cw-2026-4/`).
//!
//! `peers echo-server ...` instead runs one echo server (monoio or compio) for
//! scripts/echo-bench (src/echo.rs).

mod echo;
mod harness;

use harness::Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("echo-server") {
        echo::run(&args[1..]);
    }
    let opts = harness::Options::from_args();
    tokio_uring_peer::run(&opts);
    monoio_peer::run(&opts);
    commonware_2026_10::run(&opts);
    commonware_2026_4_child(&opts);
}

/// Runs the `peers-2026-4` binary with the same arguments; its lines go straight to stdout.
fn commonware_2026_4_child(opts: &harness::Options) {
    const PEER: &str = "commonware 2026.4.0 (tokio, iouring)";
    if !opts.wants_peer(PEER) {
        return;
    }
    let bin = std::env::var_os("PEERS_2026_4_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("cw-2026-4/target/release/peers-2026-4")
        });
    if !bin.exists() {
        harness::skip(
            PEER,
            "*",
            &format!(
                "{} is not built: cargo build --release --manifest-path \
                 benches/peers/cw-2026-4/Cargo.toml",
                bin.display()
            ),
        );
        return;
    }
    match std::process::Command::new(&bin).args(&opts.raw).status() {
        Ok(status) if status.success() => {}
        Ok(status) => harness::note(&format!("{} exited with {status}", bin.display())),
        Err(e) => harness::note(&format!("cannot run {}: {e}", bin.display())),
    }
}

/// tokio-uring 0.5: one thread, its own ring; `fs::File::read_at`, `net::TcpStream`,
/// `net::UnixStream`, `no_op`.
mod tokio_uring_peer {
    use crate::harness::{
        plain_data_file, Cell, Latencies, Offsets, Options, Window, BLOCK, FILE_SIZE, PING, STREAM,
    };
    use std::future::Future;
    use std::io;
    use std::os::unix::fs::OpenOptionsExt;
    use std::rc::Rc;
    use std::time::Instant;
    use tokio_uring::buf::{BoundedBuf, BoundedBufMut, IoBuf, IoBufMut};
    use tokio_uring::fs::File;
    use tokio_uring::net::{TcpListener, TcpStream, UnixStream};

    const PEER: &str = "tokio-uring 0.5";

    pub fn run(opts: &Options) {
        if !opts.wants_peer(PEER) {
            return;
        }
        tokio_uring::start(async {
            if opts.wants(PEER, "nop") {
                for outstanding in [1, 64] {
                    tasks(
                        opts,
                        "nop",
                        outstanding,
                        |_, deadline, mut lat| async move {
                            let mut ops = 0;
                            loop {
                                let t = Instant::now();
                                if t >= deadline {
                                    break;
                                }
                                tokio_uring::no_op().await.expect("no_op");
                                lat.record(t);
                                ops += 1;
                            }
                            (ops, lat)
                        },
                    )
                    .await;
                }
            }
            if opts.wants(PEER, "read_at_4k_hot") {
                let path = plain_data_file();
                let file = Rc::new(File::open(&path).await.expect("open the data file"));
                for outstanding in [1, 32] {
                    let file = file.clone();
                    tasks(
                        opts,
                        "read_at_4k_hot",
                        outstanding,
                        move |i, deadline, lat| {
                            reads(file.clone(), Vec::with_capacity(BLOCK), i, deadline, lat)
                        },
                    )
                    .await;
                }
            }
            if opts.wants(PEER, "read_at_4k_direct") {
                let path = plain_data_file();
                match std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&path)
                {
                    Ok(std_file) => {
                        let file = Rc::new(File::from_std(std_file));
                        for outstanding in [1, 32] {
                            let file = file.clone();
                            tasks(opts, "read_at_4k_direct", outstanding, move |i, d, lat| {
                                reads(file.clone(), Aligned::new(), i, d, lat)
                            })
                            .await;
                        }
                    }
                    Err(e) => crate::harness::skip(PEER, "read_at_4k_direct", &e.to_string()),
                }
            }
            if opts.wants(PEER, "pingpong_unix_64") {
                let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
                pingpong(
                    opts,
                    "pingpong_unix_64",
                    UnixStream::from_std(a),
                    UnixStream::from_std(b),
                )
                .await;
            }
            if opts.wants(PEER, "pingpong_tcp_64") {
                let (client, server) = tcp_pair().await;
                pingpong(opts, "pingpong_tcp_64", client, server).await;
            }
            if opts.wants(PEER, "stream_16k") {
                stream(opts).await;
            }
        });
    }

    /// Warm-up, then the measured phase: `outstanding` tasks built by `task`, each running
    /// until the deadline and returning its op count.
    async fn tasks<F, Fut>(opts: &Options, workload: &str, outstanding: usize, task: F)
    where
        F: Fn(usize, Instant, Latencies) -> Fut,
        Fut: Future<Output = (u64, Latencies)> + 'static,
    {
        let warm = Instant::now() + opts.warmup;
        let mut handles = Vec::with_capacity(outstanding);
        for (i, lat) in Latencies::split(outstanding).into_iter().enumerate() {
            handles.push(tokio_uring::spawn(task(i, warm, lat)));
        }
        for handle in handles.drain(..) {
            handle.await.expect("warm-up task");
        }

        let lats = Latencies::split(outstanding);
        let mut done = Vec::with_capacity(outstanding);
        let window = Window::open();
        let deadline = window.start() + opts.measure;
        for (i, lat) in lats.into_iter().enumerate() {
            handles.push(tokio_uring::spawn(task(i, deadline, lat)));
        }
        let mut ops = 0;
        for handle in handles.drain(..) {
            let (n, lat) = handle.await.expect("task");
            ops += n;
            done.push(lat);
        }
        let closed = window.close();
        Cell {
            peer: PEER,
            workload,
            outstanding,
        }
        .report(ops, closed, &done);
    }

    /// One reader: 4 KiB `read_at` at random aligned offsets, reusing its buffer.
    async fn reads<B: IoBufMut>(
        file: Rc<File>,
        mut buf: B,
        task: usize,
        deadline: Instant,
        mut lat: Latencies,
    ) -> (u64, Latencies) {
        let mut offsets = Offsets::new(task as u64 + 1);
        let mut ops = 0;
        loop {
            let t = Instant::now();
            if t >= deadline {
                break;
            }
            let (res, back) = file.read_at(buf, offsets.next(FILE_SIZE)).await;
            assert_eq!(res.expect("read_at"), BLOCK, "short read");
            buf = back;
            lat.record(t);
            ops += 1;
        }
        (ops, lat)
    }

    /// A 4 KiB buffer aligned to 4 KiB, as O_DIRECT needs.
    struct Aligned {
        ptr: *mut u8,
        init: usize,
    }

    const ALIGNED: std::alloc::Layout = match std::alloc::Layout::from_size_align(BLOCK, BLOCK) {
        Ok(layout) => layout,
        Err(_) => panic!("bad layout"),
    };

    impl Aligned {
        fn new() -> Self {
            // SAFETY: the layout has a non-zero size.
            let ptr = unsafe { std::alloc::alloc_zeroed(ALIGNED) };
            assert!(!ptr.is_null(), "out of memory");
            Aligned { ptr, init: BLOCK }
        }
    }

    impl Drop for Aligned {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout, freed once.
            unsafe { std::alloc::dealloc(self.ptr, ALIGNED) }
        }
    }

    // SAFETY: the allocation never moves and lives until drop; `bytes_init <= bytes_total`.
    unsafe impl IoBuf for Aligned {
        fn stable_ptr(&self) -> *const u8 {
            self.ptr
        }
        fn bytes_init(&self) -> usize {
            self.init
        }
        fn bytes_total(&self) -> usize {
            BLOCK
        }
    }

    // SAFETY: as above; the pointer is valid for writes of `BLOCK` bytes.
    unsafe impl IoBufMut for Aligned {
        fn stable_mut_ptr(&mut self) -> *mut u8 {
            self.ptr
        }
        unsafe fn set_init(&mut self, pos: usize) {
            self.init = self.init.max(pos);
        }
    }

    /// The two stream types, for the shared ping-pong and streaming code.
    trait Conn: 'static {
        async fn read_into<T: BoundedBufMut>(&self, buf: T) -> tokio_uring::BufResult<usize, T>;
        async fn write_all_from<T: BoundedBuf>(&self, buf: T) -> tokio_uring::BufResult<(), T>;
    }

    impl Conn for TcpStream {
        async fn read_into<T: BoundedBufMut>(&self, buf: T) -> tokio_uring::BufResult<usize, T> {
            self.read(buf).await
        }
        async fn write_all_from<T: BoundedBuf>(&self, buf: T) -> tokio_uring::BufResult<(), T> {
            self.write_all(buf).await
        }
    }

    impl Conn for UnixStream {
        async fn read_into<T: BoundedBufMut>(&self, buf: T) -> tokio_uring::BufResult<usize, T> {
            self.read(buf).await
        }
        async fn write_all_from<T: BoundedBuf>(&self, buf: T) -> tokio_uring::BufResult<(), T> {
            self.write_all(buf).await
        }
    }

    /// Reads exactly `len` bytes into `buf` (cleared first). `Ok(false)` at end of stream.
    async fn read_exact<C: Conn>(
        conn: &C,
        mut buf: Vec<u8>,
        len: usize,
    ) -> (io::Result<bool>, Vec<u8>) {
        buf.clear();
        while buf.len() < len {
            let filled = buf.len();
            let (res, slice) = conn.read_into(buf.slice(filled..len)).await;
            buf = slice.into_inner();
            match res {
                Ok(0) => return (Ok(false), buf),
                Ok(_) => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(true), buf)
    }

    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener =
            TcpListener::bind("127.0.0.1:0".parse().expect("address")).expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local_addr");
        let connect = tokio_uring::spawn(async move { TcpStream::connect(addr).await });
        let (server, _) = listener.accept().await.expect("accept");
        let client = connect.await.expect("join").expect("connect");
        client.set_nodelay(true).expect("nodelay");
        server.set_nodelay(true).expect("nodelay");
        (client, server)
    }

    /// Echoes `PING`-byte messages until the peer closes.
    async fn echo<C: Conn>(conn: C) {
        let mut buf = Vec::with_capacity(PING);
        loop {
            let (res, back) = read_exact(&conn, buf, PING).await;
            match res {
                Ok(true) => {}
                _ => return,
            }
            let (res, back) = conn.write_all_from(back).await;
            if res.is_err() {
                return;
            }
            buf = back;
        }
    }

    /// One client driving round trips until `deadline`.
    async fn ping<C: Conn>(conn: &C, deadline: Instant, lat: &mut Latencies) -> u64 {
        let mut msg = vec![7u8; PING];
        let mut reply = Vec::with_capacity(PING);
        let mut ops = 0;
        loop {
            let t = Instant::now();
            if t >= deadline {
                break;
            }
            let (res, back) = conn.write_all_from(msg).await;
            res.expect("send");
            msg = back;
            let (res, back) = read_exact(conn, reply, PING).await;
            assert!(res.expect("recv"), "echo closed");
            reply = back;
            lat.record(t);
            ops += 1;
        }
        ops
    }

    async fn pingpong<C: Conn>(opts: &Options, workload: &str, client: C, server: C) {
        let server = tokio_uring::spawn(echo(server));
        let mut lat = Latencies::with_capacity(crate::harness::SAMPLES);
        ping(&client, Instant::now() + opts.warmup, &mut lat).await;
        let mut lat = Latencies::with_capacity(crate::harness::SAMPLES);
        let window = Window::open();
        let ops = ping(&client, window.start() + opts.measure, &mut lat).await;
        let closed = window.close();
        Cell {
            peer: PEER,
            workload,
            outstanding: 1,
        }
        .report(ops, closed, std::slice::from_ref(&lat));
        drop(client);
        server.await.expect("echo task");
    }

    /// `stream_16k`: the client sends 16 KiB messages back to back until the deadline, then
    /// closes; the measured side receives them (one op = one whole message received).
    async fn stream(opts: &Options) {
        for measured in [false, true] {
            let (client, server) = tcp_pair().await;
            let mut lat = Latencies::with_capacity(crate::harness::SAMPLES);
            let window = Window::open();
            let length = if measured { opts.measure } else { opts.warmup };
            let deadline = window.start() + length;
            let sender = tokio_uring::spawn(async move {
                let mut msg = vec![3u8; STREAM];
                while Instant::now() < deadline {
                    let (res, back) = client.write_all_from(msg).await;
                    res.expect("send");
                    msg = back;
                }
                drop(client);
            });
            let mut buf = Vec::with_capacity(STREAM);
            let mut ops = 0;
            loop {
                let t = Instant::now();
                let (res, back) = read_exact(&server, buf, STREAM).await;
                buf = back;
                if !res.expect("recv") {
                    break;
                }
                lat.record(t);
                ops += 1;
            }
            sender.await.expect("sender");
            let closed = window.close();
            if measured {
                Cell {
                    peer: PEER,
                    workload: "stream_16k",
                    outstanding: 1,
                }
                .report(ops, closed, std::slice::from_ref(&lat));
            }
        }
    }
}

/// monoio 0.2: one thread, its io_uring driver (`IoUringDriver`); `fs::File::read_at`,
/// `net::TcpStream`, `net::UnixStream`.
mod monoio_peer {
    use crate::harness::{
        plain_data_file, Cell, Latencies, Offsets, Options, Window, BLOCK, FILE_SIZE, PING, STREAM,
    };
    use monoio::fs::File;
    use monoio::io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRent, AsyncWriteRentExt};
    use monoio::net::{TcpListener, TcpStream, UnixStream};
    use std::future::Future;
    use std::rc::Rc;
    use std::time::Instant;

    const PEER: &str = "monoio 0.2 (io_uring)";

    pub fn run(opts: &Options) {
        if !opts.wants_peer(PEER) {
            return;
        }
        let mut rt = match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(256)
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                crate::harness::skip(PEER, "*", &format!("io_uring driver: {e}"));
                return;
            }
        };
        rt.block_on(async {
            if opts.wants(PEER, "read_at_4k_hot") {
                let path = plain_data_file();
                let file = Rc::new(File::open(&path).await.expect("open the data file"));
                for outstanding in [1, 32] {
                    let file = file.clone();
                    tasks(
                        opts,
                        "read_at_4k_hot",
                        outstanding,
                        move |i, deadline, lat| reads(file.clone(), i, deadline, lat),
                    )
                    .await;
                }
            }
            if opts.wants(PEER, "pingpong_unix_64") {
                let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
                let a = UnixStream::from_std(a).expect("from_std");
                let b = UnixStream::from_std(b).expect("from_std");
                pingpong(opts, "pingpong_unix_64", a, b).await;
            }
            if opts.wants(PEER, "pingpong_tcp_64") {
                let (client, server) = tcp_pair().await;
                pingpong(opts, "pingpong_tcp_64", client, server).await;
            }
            if opts.wants(PEER, "stream_16k") {
                stream(opts).await;
            }
        });
    }

    /// Warm-up, then the measured phase: `outstanding` tasks built by `task`, each running
    /// until the deadline and returning its op count.
    async fn tasks<F, Fut>(opts: &Options, workload: &str, outstanding: usize, task: F)
    where
        F: Fn(usize, Instant, Latencies) -> Fut,
        Fut: Future<Output = (u64, Latencies)> + 'static,
    {
        let warm = Instant::now() + opts.warmup;
        let mut handles = Vec::with_capacity(outstanding);
        for (i, lat) in Latencies::split(outstanding).into_iter().enumerate() {
            handles.push(monoio::spawn(task(i, warm, lat)));
        }
        for handle in handles.drain(..) {
            handle.await;
        }

        let lats = Latencies::split(outstanding);
        let mut done = Vec::with_capacity(outstanding);
        let window = Window::open();
        let deadline = window.start() + opts.measure;
        for (i, lat) in lats.into_iter().enumerate() {
            handles.push(monoio::spawn(task(i, deadline, lat)));
        }
        let mut ops = 0;
        for handle in handles.drain(..) {
            let (n, lat) = handle.await;
            ops += n;
            done.push(lat);
        }
        let closed = window.close();
        Cell {
            peer: PEER,
            workload,
            outstanding,
        }
        .report(ops, closed, &done);
    }

    /// One reader: 4 KiB `read_at` at random aligned offsets, reusing its buffer.
    async fn reads(
        file: Rc<File>,
        task: usize,
        deadline: Instant,
        mut lat: Latencies,
    ) -> (u64, Latencies) {
        let mut buf = vec![0u8; BLOCK];
        let mut offsets = Offsets::new(task as u64 + 1);
        let mut ops = 0;
        loop {
            let t = Instant::now();
            if t >= deadline {
                break;
            }
            let (res, back) = file.read_at(buf, offsets.next(FILE_SIZE)).await;
            assert_eq!(res.expect("read_at"), BLOCK, "short read");
            buf = back;
            lat.record(t);
            ops += 1;
        }
        (ops, lat)
    }

    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local_addr");
        let connect = monoio::spawn(async move { TcpStream::connect_addr(addr).await });
        let (server, _) = listener.accept().await.expect("accept");
        let client = connect.await.expect("connect");
        client.set_nodelay(true).expect("nodelay");
        server.set_nodelay(true).expect("nodelay");
        (client, server)
    }

    /// Echoes `PING`-byte messages until the peer closes.
    async fn echo<C: AsyncReadRent + AsyncWriteRent>(mut conn: C) {
        let mut buf = vec![0u8; PING];
        loop {
            let (res, back) = conn.read_exact(buf).await;
            if res.is_err() {
                return;
            }
            let (res, back) = conn.write_all(back).await;
            if res.is_err() {
                return;
            }
            buf = back;
        }
    }

    /// One client driving round trips until `deadline`.
    async fn ping<C: AsyncReadRent + AsyncWriteRent>(
        conn: &mut C,
        deadline: Instant,
        lat: &mut Latencies,
    ) -> u64 {
        let mut msg = vec![7u8; PING];
        let mut reply = vec![0u8; PING];
        let mut ops = 0;
        loop {
            let t = Instant::now();
            if t >= deadline {
                break;
            }
            let (res, back) = conn.write_all(msg).await;
            res.expect("send");
            msg = back;
            let (res, back) = conn.read_exact(reply).await;
            res.expect("recv");
            reply = back;
            lat.record(t);
            ops += 1;
        }
        ops
    }

    async fn pingpong<C: AsyncReadRent + AsyncWriteRent + 'static>(
        opts: &Options,
        workload: &str,
        mut client: C,
        server: C,
    ) {
        let server = monoio::spawn(echo(server));
        let mut lat = Latencies::with_capacity(crate::harness::SAMPLES);
        ping(&mut client, Instant::now() + opts.warmup, &mut lat).await;
        let mut lat = Latencies::with_capacity(crate::harness::SAMPLES);
        let window = Window::open();
        let ops = ping(&mut client, window.start() + opts.measure, &mut lat).await;
        let closed = window.close();
        Cell {
            peer: PEER,
            workload,
            outstanding: 1,
        }
        .report(ops, closed, std::slice::from_ref(&lat));
        drop(client);
        server.await;
    }

    /// `stream_16k`: the client sends 16 KiB messages back to back until the deadline, then
    /// closes; the measured side receives them (one op = one whole message received).
    async fn stream(opts: &Options) {
        for measured in [false, true] {
            let (mut client, mut server) = tcp_pair().await;
            let mut lat = Latencies::with_capacity(crate::harness::SAMPLES);
            let window = Window::open();
            let length = if measured { opts.measure } else { opts.warmup };
            let deadline = window.start() + length;
            let sender = monoio::spawn(async move {
                let mut msg = vec![3u8; STREAM];
                while Instant::now() < deadline {
                    let (res, back) = client.write_all(msg).await;
                    res.expect("send");
                    msg = back;
                }
                drop(client);
            });
            let mut buf = vec![0u8; STREAM];
            let mut ops = 0;
            loop {
                let t = Instant::now();
                let (res, back) = server.read_exact(buf).await;
                buf = back;
                if res.is_err() {
                    break;
                }
                lat.record(t);
                ops += 1;
            }
            sender.await;
            let closed = window.close();
            if measured {
                Cell {
                    peer: PEER,
                    workload: "stream_16k",
                    outstanding: 1,
                }
                .report(ops, closed, std::slice::from_ref(&lat));
            }
        }
    }
}

/// commonware-runtime 2026.10.0, its native io_uring runner (`iouring::Runner`), with one and
/// with two pool workers; its `Storage`/`Blob` API for reads, `Network`/`Sink`/`Stream` for TCP.
mod commonware_2026_10 {
    use crate::harness::{
        fill, note, scratch_dir, skip, Cell, Latencies, Offsets, Options, Window, BLOCK, FILE_SIZE,
        PING, STREAM,
    };
    use cw::{
        Blob as _, IoBuf, IoBufMut, Listener as _, Network as _, ReadOptions, Runner as _,
        Sink as _, Spawner as _, Storage as _, Stream as _, Supervisor as _, WriteOptions,
    };
    use cw_2026_10 as cw;
    use std::sync::Arc;
    use std::time::Instant;

    type Context = cw::iouring::Context;
    type Blob = <Context as cw::Storage>::Blob;

    pub fn run(opts: &Options) {
        for workers in [1usize, 2] {
            let peer = format!(
                "commonware 2026.10.0 (iouring, {workers} worker{})",
                if workers == 1 { "" } else { "s" }
            );
            if !opts.wants_peer(&peer) {
                continue;
            }
            let config = cw::iouring::Config::new()
                .with_worker_threads(workers)
                .with_storage_directory(scratch_dir().join("cw-2026-10"));
            let opts = opts.clone();
            cw::iouring::Runner::new(config)
                .start(|ctx| async move { all(ctx, &opts, &peer).await });
        }
        for (workload, reason) in [
            ("nop", "no nop in its public API"),
            ("pingpong_unix_64", "its Network API is TCP only"),
        ] {
            if opts.wants("commonware 2026.10.0", workload) {
                skip("commonware 2026.10.0", workload, reason);
            }
        }
    }

    async fn all(ctx: Context, opts: &Options, peer: &str) {
        let hot = opts.wants(peer, "read_at_4k_hot");
        let direct = opts.wants(peer, "read_at_4k_direct");
        if hot || direct {
            let blob = Arc::new(data_blob(&ctx).await);
            for (wanted, workload, options) in [
                (hot, "read_at_4k_hot", ReadOptions::default()),
                // Its uncached reads go through an O_DIRECT descriptor (aligned superset, copied
                // into the caller's buffer): the public way to read around the page cache.
                (direct, "read_at_4k_direct", ReadOptions::DONT_CACHE),
            ] {
                if wanted {
                    for outstanding in [1, 32] {
                        reads(&ctx, opts, peer, workload, outstanding, &blob, options).await;
                    }
                }
            }
        }
        if opts.wants(peer, "pingpong_tcp_64") {
            pingpong(&ctx, opts, peer).await;
        }
        if opts.wants(peer, "stream_16k") {
            stream(&ctx, opts, peer).await;
        }
    }

    /// The 256 MiB blob, created once through the Storage API (kept across runs), then read
    /// once from start to end so it is in the page cache.
    async fn data_blob(ctx: &Context) -> Blob {
        let (blob, size) = ctx.open("peers", b"data").await.expect("open blob");
        if size != FILE_SIZE {
            note("commonware 2026.10.0: creating its 256 MiB blob");
            let mut seed = 0x1234_5678_9abc_def1u64;
            let mut offset = 0;
            while offset < FILE_SIZE {
                let mut chunk = vec![0u8; 1 << 20];
                fill(&mut chunk, &mut seed);
                blob.write_at(offset, chunk, WriteOptions::default())
                    .await
                    .expect("write blob");
                offset += 1 << 20;
            }
            blob.sync().await.expect("sync blob");
        }
        let mut offset = 0;
        while offset < FILE_SIZE {
            blob.read_at(offset, 1 << 20, ReadOptions::default())
                .await
                .expect("warm blob");
            offset += 1 << 20;
        }
        blob
    }

    async fn read_task(
        blob: Arc<Blob>,
        options: ReadOptions,
        task: usize,
        deadline: Instant,
        mut lat: Latencies,
    ) -> (u64, Latencies) {
        let mut offsets = Offsets::new(task as u64 + 1);
        let mut buf = IoBufMut::with_capacity(BLOCK);
        let mut ops = 0;
        loop {
            let t = Instant::now();
            if t >= deadline {
                break;
            }
            let back = blob
                .read_at_buf(offsets.next(FILE_SIZE), BLOCK, buf, options)
                .await
                .expect("read_at_buf");
            buf = back
                .try_into_single()
                .unwrap_or_else(|bufs| bufs.coalesce());
            lat.record(t);
            ops += 1;
        }
        (ops, lat)
    }

    async fn reads(
        ctx: &Context,
        opts: &Options,
        peer: &str,
        workload: &str,
        outstanding: usize,
        blob: &Arc<Blob>,
        options: ReadOptions,
    ) {
        let spawn_all = |deadline: Instant, lats: Vec<Latencies>| {
            let mut handles = Vec::with_capacity(outstanding);
            for (i, lat) in lats.into_iter().enumerate() {
                let blob = blob.clone();
                handles.push(
                    ctx.child("reader")
                        .spawn(move |_| read_task(blob, options, i, deadline, lat)),
                );
            }
            handles
        };
        for handle in spawn_all(Instant::now() + opts.warmup, Latencies::split(outstanding)) {
            handle.await.expect("warm-up task");
        }
        let lats = Latencies::split(outstanding);
        let mut done = Vec::with_capacity(outstanding);
        let window = Window::open();
        let mut ops = 0;
        for handle in spawn_all(window.start() + opts.measure, lats) {
            let (n, lat) = handle.await.expect("reader");
            ops += n;
            done.push(lat);
        }
        let closed = window.close();
        Cell {
            peer,
            workload,
            outstanding,
        }
        .report(ops, closed, &done);
    }

    /// A connected pair over 127.0.0.1: (client sink, client stream, server sink, server stream).
    async fn connect(
        ctx: &Context,
    ) -> (
        cw::SinkOf<Context>,
        cw::StreamOf<Context>,
        cw::SinkOf<Context>,
        cw::StreamOf<Context>,
    ) {
        let mut listener = ctx
            .bind("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let accept = ctx.child("accept").spawn(move |_| async move {
            let (_, sink, stream) = listener.accept().await.expect("accept");
            (sink, stream)
        });
        let (client_sink, client_stream) = ctx.dial(addr).await.expect("dial");
        let (server_sink, server_stream) = accept.await.expect("accept task");
        (client_sink, client_stream, server_sink, server_stream)
    }

    async fn pingpong(ctx: &Context, opts: &Options, peer: &str) {
        let (mut sink, mut stream, mut server_sink, mut server_stream) = connect(ctx).await;
        let server = ctx.child("echo").spawn(move |_| async move {
            while let Ok(bufs) = server_stream.recv(PING).await {
                if server_sink.send(bufs).await.is_err() {
                    break;
                }
            }
        });
        let msg = IoBuf::from(vec![7u8; PING]);
        let mut lat = Latencies::with_capacity(crate::harness::SAMPLES);
        let warm = Instant::now() + opts.warmup;
        ping(&mut sink, &mut stream, &msg, warm, &mut lat).await;
        let mut lat = Latencies::with_capacity(crate::harness::SAMPLES);
        let window = Window::open();
        let deadline = window.start() + opts.measure;
        let ops = ping(&mut sink, &mut stream, &msg, deadline, &mut lat).await;
        let closed = window.close();
        Cell {
            peer,
            workload: "pingpong_tcp_64",
            outstanding: 1,
        }
        .report(ops, closed, std::slice::from_ref(&lat));
        drop((sink, stream));
        let _ = server.await;
    }

    /// One client driving round trips until `deadline`.
    async fn ping(
        sink: &mut cw::SinkOf<Context>,
        stream: &mut cw::StreamOf<Context>,
        msg: &IoBuf,
        deadline: Instant,
        lat: &mut Latencies,
    ) -> u64 {
        let mut ops = 0;
        loop {
            let t = Instant::now();
            if t >= deadline {
                break;
            }
            sink.send(msg.clone()).await.expect("send");
            let reply = stream.recv(PING).await.expect("recv");
            assert_eq!(reply.len(), PING);
            lat.record(t);
            ops += 1;
        }
        ops
    }

    async fn stream(ctx: &Context, opts: &Options, peer: &str) {
        for measured in [false, true] {
            let (mut sink, client_stream, _server_sink, mut server_stream) = connect(ctx).await;
            let mut lat = Latencies::with_capacity(crate::harness::SAMPLES);
            let window = Window::open();
            let deadline = window.start() + if measured { opts.measure } else { opts.warmup };
            let sender = ctx.child("sender").spawn(move |_| async move {
                let msg = IoBuf::from(vec![3u8; STREAM]);
                while Instant::now() < deadline {
                    sink.send(msg.clone()).await.expect("send");
                }
                drop((sink, client_stream));
            });
            let mut ops = 0;
            loop {
                let t = Instant::now();
                match server_stream.recv(STREAM).await {
                    Ok(bufs) => assert_eq!(bufs.len(), STREAM),
                    Err(_) => break,
                }
                lat.record(t);
                ops += 1;
            }
            sender.await.expect("sender");
            let closed = window.close();
            if measured {
                Cell {
                    peer,
                    workload: "stream_16k",
                    outstanding: 1,
                }
                .report(ops, closed, std::slice::from_ref(&lat));
            }
        }
    }
}
