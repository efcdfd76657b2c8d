//! `peers-2026-4`: commonware-runtime 2026.4.0, its tokio runner with the `iouring-storage` and
//! `iouring-network` features (default two worker threads), measured exactly like the peers of
//! the `peers` binary, which runs this one as a child. It lives in its own workspace because
//! Cargo cannot resolve 2026.4.0 and 2026.10.0 (semver-compatible) in one lockfile.

#[path = "../../src/harness.rs"]
mod harness;

use commonware_runtime::{
    self as cw, Blob as _, IoBuf, IoBufMut, Listener as _, Network as _, Runner as _, Sink as _,
    Spawner as _, Storage as _, Stream as _,
};
use harness::{
    fill, note, scratch_dir, skip, Cell, Counting, Latencies, Offsets, Options, Window, BLOCK,
    FILE_SIZE, PING, STREAM,
};
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PEER: &str = "commonware 2026.4.0 (tokio, iouring)";

type Context = cw::tokio::Context;
type Blob = <Context as cw::Storage>::Blob;

fn main() {
    let opts = Options::from_args();
    if !opts.wants_peer(PEER) {
        return;
    }
    let config = cw::tokio::Config::new().with_storage_directory(scratch_dir().join("cw-2026-4"));
    let run_opts = opts.clone();
    cw::tokio::Runner::new(config).start(|ctx| async move { all(ctx, &run_opts).await });
    for (workload, reason) in [
        ("nop", "no nop in its public API"),
        ("pingpong_unix_64", "its Network API is TCP only"),
        (
            "read_at_4k_direct",
            "its Storage API has no O_DIRECT or uncached read option",
        ),
    ] {
        if opts.wants(PEER, workload) {
            skip(PEER, workload, reason);
        }
    }
}

async fn all(ctx: Context, opts: &Options) {
    if opts.wants(PEER, "read_at_4k_hot") {
        let blob = data_blob(&ctx).await;
        for outstanding in [1, 32] {
            reads(&ctx, opts, outstanding, &blob).await;
        }
    }
    if opts.wants(PEER, "pingpong_tcp_64") {
        pingpong(&ctx, opts).await;
    }
    if opts.wants(PEER, "stream_16k") {
        stream(&ctx, opts).await;
    }
}

/// The 256 MiB blob, created once through the Storage API (kept across runs), then read once
/// from start to end so it is in the page cache.
async fn data_blob(ctx: &Context) -> Blob {
    let (blob, size) = ctx.open("peers", b"data").await.expect("open blob");
    if size != FILE_SIZE {
        note("commonware 2026.4.0: creating its 256 MiB blob");
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut offset = 0;
        while offset < FILE_SIZE {
            let mut chunk = vec![0u8; 1 << 20];
            fill(&mut chunk, &mut seed);
            blob.write_at(offset, chunk).await.expect("write blob");
            offset += 1 << 20;
        }
        blob.sync().await.expect("sync blob");
    }
    let mut offset = 0;
    while offset < FILE_SIZE {
        blob.read_at(offset, 1 << 20).await.expect("warm blob");
        offset += 1 << 20;
    }
    blob
}

async fn read_task(
    blob: Blob,
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
            .read_at_buf(offsets.next(FILE_SIZE), BLOCK, buf)
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

async fn reads(ctx: &Context, opts: &Options, outstanding: usize, blob: &Blob) {
    let spawn_all = |deadline: Instant, lats: Vec<Latencies>| {
        let mut handles = Vec::with_capacity(outstanding);
        for (i, lat) in lats.into_iter().enumerate() {
            let blob = blob.clone();
            handles.push(
                ctx.clone()
                    .spawn(move |_| read_task(blob, i, deadline, lat)),
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
        peer: PEER,
        workload: "read_at_4k_hot",
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
    let accept = ctx.clone().spawn(move |_| async move {
        let (_, sink, stream) = listener.accept().await.expect("accept");
        (sink, stream)
    });
    let (client_sink, client_stream) = ctx.dial(addr).await.expect("dial");
    let (server_sink, server_stream) = accept.await.expect("accept task");
    (client_sink, client_stream, server_sink, server_stream)
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

async fn pingpong(ctx: &Context, opts: &Options) {
    let (mut sink, mut stream, mut server_sink, mut server_stream) = connect(ctx).await;
    let server = ctx.clone().spawn(move |_| async move {
        while let Ok(bufs) = server_stream.recv(PING).await {
            if server_sink.send(bufs).await.is_err() {
                break;
            }
        }
    });
    let msg = IoBuf::from(vec![7u8; PING]);
    let mut lat = Latencies::with_capacity(harness::SAMPLES);
    let warm = Instant::now() + opts.warmup;
    ping(&mut sink, &mut stream, &msg, warm, &mut lat).await;
    let mut lat = Latencies::with_capacity(harness::SAMPLES);
    let window = Window::open();
    let deadline = window.start() + opts.measure;
    let ops = ping(&mut sink, &mut stream, &msg, deadline, &mut lat).await;
    let closed = window.close();
    Cell {
        peer: PEER,
        workload: "pingpong_tcp_64",
        outstanding: 1,
    }
    .report(ops, closed, std::slice::from_ref(&lat));
    drop((sink, stream));
    let _ = server.await;
}

/// `stream_16k`: the client sends 16 KiB messages back to back until the deadline, then closes;
/// the measured side receives them (one op = one whole message received).
async fn stream(ctx: &Context, opts: &Options) {
    for measured in [false, true] {
        let (mut sink, client_stream, _server_sink, mut server_stream) = connect(ctx).await;
        let mut lat = Latencies::with_capacity(harness::SAMPLES);
        let window = Window::open();
        let deadline = window.start() + if measured { opts.measure } else { opts.warmup };
        let sender = ctx.clone().spawn(move |_| async move {
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
                peer: PEER,
                workload: "stream_16k",
                outstanding: 1,
            }
            .report(ops, closed, std::slice::from_ref(&lat));
        }
    }
}
