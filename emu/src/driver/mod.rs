//! The emulated driver's state: devices, contexts, streams, events, modules,
//! and the scheduler that runs what the streams hold.
//!
//! Work is queued, not run, when it is submitted: it runs when the host
//! waits for it (a synchronize, a query, a copy into pageable host memory),
//! each stream in its order, all the context's streams taking turns one item
//! at a time until the work waited for is done. That is a schedule a GPU
//! could take, and it is hostile to missing synchronization: a kernel runs
//! as late as it may, and two streams that are not ordered interleave. Frees are the exception: a `cuMemFreeAsync`
//! runs as soon as the work it is ordered after has run, as early as it
//! may, so a kernel still queued on another stream meets freed memory and
//! fails.
//!
//! The legacy default stream is ordered with the context's blocking streams
//! (the per-thread default streams among them), and not with streams made
//! with `CU_STREAM_NON_BLOCKING`, as on a GPU.

pub mod api;
mod errors;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::ThreadId;
use std::time::Instant;

use crate::exec::{self, Dims, FaultKind};
use crate::memory::{Memory, View};
use crate::ptx;

pub use errors::{CUresult, code, error_name, error_string};

/// What the emulated machine looks like; from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `CUDA_EMU_DEVICES`, default 2.
    pub devices: usize,
    /// `CUDA_EMU_DRIVER_VERSION` (1000·major + 10·minor), default 13000.
    pub version: i32,
    /// `CUDA_EMU_SM`: the compute capability, as 10·major + minor; default 90.
    pub sm: u32,
    /// `CUDA_EMU_MEMORY_MB` per device, default 8192.
    pub memory_bytes: usize,
    /// `CUDA_EMU_THREADS`: host threads that run a launch's blocks.
    pub workers: usize,
}

impl Config {
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        Config {
            devices: var("CUDA_EMU_DEVICES").unwrap_or(2) as usize,
            version: var("CUDA_EMU_DRIVER_VERSION").unwrap_or(13000) as i32,
            sm: var("CUDA_EMU_SM").unwrap_or(90) as u32,
            memory_bytes: (var("CUDA_EMU_MEMORY_MB").unwrap_or(8192) as usize) << 20,
            workers: var("CUDA_EMU_THREADS")
                .map(|v| v as usize)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        }
    }

    /// The newest PTX ISA a driver of this release reads.
    pub fn max_ptx(&self) -> (u32, u32) {
        match self.version {
            v if v >= 13000 => (9, 0),
            v if v >= 12090 => (8, 8),
            v if v >= 12080 => (8, 7),
            v if v >= 12050 => (8, 5),
            v if v >= 12040 => (8, 4),
            v if v >= 12030 => (8, 3),
            v if v >= 12020 => (8, 2),
            v if v >= 12010 => (8, 1),
            v if v >= 12000 => (8, 0),
            _ => (7, 8),
        }
    }
}

/// Counts of what the host asked for, to check a library's promises (no
/// host synchronization, no allocation per call). `cuEmuGetCounters` reads
/// them for the calling thread or for the whole process.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub launches: u64,
    /// Waits of the host for the device: stream, event and context
    /// synchronizes, queries that found work, synchronous copies, copies to
    /// pageable host memory, and `cuMemFree`.
    pub host_syncs: u64,
    pub allocations: u64,
    pub frees: u64,
    /// Work submitted to the legacy default stream, which waits for (and
    /// holds up) every blocking stream of its context.
    pub legacy_stream_ops: u64,
    pub events_recorded: u64,
    pub module_loads: u64,
    /// PTX instructions executed.
    pub instructions: u64,
}

impl Counters {
    fn add(&mut self, f: impl Fn(&mut Counters)) {
        f(self);
    }
}

thread_local! {
    /// The thread's context stack: its last element is the current context.
    static CURRENT: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
    static THREAD_COUNTERS: std::cell::Cell<Counters> = const {
        std::cell::Cell::new(Counters {
            launches: 0, host_syncs: 0, allocations: 0, frees: 0, legacy_stream_ops: 0,
            events_recorded: 0, module_loads: 0, instructions: 0,
        })
    };
}

fn count(f: impl Fn(&mut Counters) + Copy, process: &mut Counters) {
    process.add(f);
    THREAD_COUNTERS.with(|c| {
        let mut v = c.get();
        f(&mut v);
        c.set(v);
    });
}

pub fn thread_counters() -> Counters {
    THREAD_COUNTERS.with(|c| c.get())
}

pub fn current_context() -> Option<u64> {
    CURRENT.with(|c| c.borrow().last().copied())
}

fn set_current(ctx: Option<u64>) {
    CURRENT.with(|c| {
        let mut s = c.borrow_mut();
        s.pop();
        if let Some(ctx) = ctx {
            s.push(ctx);
        }
    });
}

fn push_current(ctx: u64) {
    CURRENT.with(|c| c.borrow_mut().push(ctx));
}

fn pop_current() -> Option<u64> {
    CURRENT.with(|c| c.borrow_mut().pop())
}

/// Stream handles with a meaning of their own.
pub const STREAM_NULL: u64 = 0;
pub const STREAM_LEGACY: u64 = 1;
pub const STREAM_PER_THREAD: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Legacy,
    PerThread,
    Blocking,
    NonBlocking,
}

pub(crate) struct Context {
    pub device: usize,
    pub primary: bool,
    pub flags: u32,
    pub legacy: u64,
    pub per_thread: HashMap<ThreadId, u64>,
    /// The first fault of the context's work: every later call returns it.
    pub error: Option<CUresult>,
}

pub(crate) struct Stream {
    pub ctx: u64,
    pub kind: StreamKind,
    pub priority: i32,
    queue: VecDeque<Pending>,
    /// The sequence number of the last work submitted, and of the last run.
    last: u64,
    done: u64,
    pub destroyed: bool,
}

pub(crate) struct Event {
    pub ctx: u64,
    pub flags: u32,
    /// The stream and sequence number of the last record.
    pub record: Option<(u64, u64)>,
    pub time: Option<Instant>,
}

pub(crate) struct Loaded {
    pub ctx: u64,
    pub module: Arc<ptx::Module>,
    /// Where its `.global` variables live, by index.
    pub globals: Vec<u64>,
}

pub(crate) struct Function {
    pub ctx: u64,
    pub module: Arc<ptx::Module>,
    pub kernel: usize,
    pub max_dynamic_shared: u32,
}

struct Pending {
    seq: u64,
    /// Work of other streams that must run first: (stream, sequence number).
    deps: Vec<(u64, u64)>,
    work: Work,
}

/// A host pointer the device reads or writes when the work runs.
#[derive(Clone, Copy)]
pub(crate) struct HostPtr(pub usize);

pub(crate) enum Work {
    Launch {
        module: Arc<ptx::Module>,
        kernel: usize,
        dims: Dims,
        params: Vec<u8>,
    },
    /// From pageable memory, staged when submitted.
    Upload {
        dst: u64,
        data: Vec<u8>,
    },
    /// From page-locked memory, read when the copy runs.
    UploadPinned {
        dst: u64,
        src: HostPtr,
        len: usize,
    },
    Download {
        dst: HostPtr,
        src: u64,
        len: usize,
    },
    Copy {
        dst: u64,
        src: u64,
        len: usize,
    },
    Memset {
        dst: u64,
        len: usize,
        pattern: Vec<u8>,
    },
    Free {
        ptr: u64,
    },
    Record {
        event: u64,
    },
    /// Only ordering: what it depends on.
    Wait,
}

pub(crate) struct State {
    initialized: bool,
    next_handle: u64,
    seq: u64,
    pub contexts: HashMap<u64, Context>,
    /// Per device: the primary context and its reference count.
    pub primary: Vec<(Option<u64>, u32, u32)>,
    pub streams: HashMap<u64, Stream>,
    pub events: HashMap<u64, Event>,
    pub modules: HashMap<u64, Loaded>,
    pub functions: HashMap<u64, Function>,
    /// Page-locked host ranges: start → (length, allocated by the emulator).
    pub pinned: BTreeMap<usize, (usize, bool)>,
    pub counters: Counters,
}

pub struct Driver {
    pub config: Config,
    pub memory: Memory,
    state: Mutex<State>,
}

static DRIVER: OnceLock<Driver> = OnceLock::new();

pub fn driver() -> &'static Driver {
    DRIVER.get_or_init(|| {
        let config = Config::from_env();
        Driver {
            memory: Memory::new(config.devices, config.memory_bytes),
            state: Mutex::new(State {
                initialized: false,
                next_handle: 0x1000,
                seq: 0,
                contexts: HashMap::new(),
                primary: vec![(None, 0, 0); config.devices],
                streams: HashMap::new(),
                events: HashMap::new(),
                modules: HashMap::new(),
                functions: HashMap::new(),
                pinned: BTreeMap::new(),
                counters: Counters::default(),
            }),
            config,
        }
    })
}

/// Every call but cuInit, the version and the error strings needs cuInit first.
pub(crate) type Res<T> = Result<T, CUresult>;

impl Driver {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held left the state as it was before
        // the panicking call; carry on rather than fail every later call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn init(&self) {
        self.lock().initialized = true;
    }

    /// The state, after checking that cuInit was called.
    pub(crate) fn ready(&self) -> Res<MutexGuard<'_, State>> {
        let s = self.lock();
        if s.initialized {
            Ok(s)
        } else {
            Err(code::NOT_INITIALIZED)
        }
    }

    /// That cuInit was called, for calls that need no state.
    pub(crate) fn check(&self) -> Res<()> {
        self.ready().map(|_| ())
    }

    pub(crate) fn device(&self, dev: i32) -> Res<usize> {
        if dev >= 0 && (dev as usize) < self.config.devices {
            Ok(dev as usize)
        } else {
            Err(code::INVALID_DEVICE)
        }
    }
}

impl State {
    pub fn handle(&mut self) -> u64 {
        self.next_handle += 0x10;
        self.next_handle
    }

    pub fn new_context(&mut self, device: usize, primary: bool, flags: u32) -> u64 {
        let id = self.handle();
        let legacy = self.handle();
        self.streams
            .insert(legacy, Stream::new(id, StreamKind::Legacy, 0));
        self.contexts.insert(
            id,
            Context {
                device,
                primary,
                flags,
                legacy,
                per_thread: HashMap::new(),
                error: None,
            },
        );
        id
    }

    /// Destroys a context: its work runs first (as a GPU finishes it), then
    /// its streams, events, modules and functions go.
    pub fn destroy_context(&mut self, d: &Driver, ctx: u64) {
        self.force_all(d, Some(ctx));
        self.streams.retain(|_, s| s.ctx != ctx);
        self.events.retain(|_, e| e.ctx != ctx);
        self.modules.retain(|_, m| m.ctx != ctx);
        self.functions.retain(|_, f| f.ctx != ctx);
        self.contexts.remove(&ctx);
        CURRENT.with(|c| c.borrow_mut().retain(|&x| x != ctx));
    }

    pub fn context(&self, ctx: u64) -> Res<&Context> {
        self.contexts.get(&ctx).ok_or(code::INVALID_CONTEXT)
    }

    /// The current context, with its sticky error if it has one.
    pub fn current(&self) -> Res<u64> {
        let ctx = current_context().ok_or(code::INVALID_CONTEXT)?;
        match self.contexts.get(&ctx) {
            None => Err(code::CONTEXT_IS_DESTROYED),
            Some(c) => c.error.map_or(Ok(ctx), Err),
        }
    }

    /// The stream a handle names: the special handles resolve in the
    /// current context.
    pub fn stream(&mut self, handle: u64) -> Res<u64> {
        match handle {
            STREAM_NULL | STREAM_LEGACY => {
                let ctx = self.current()?;
                Ok(self.contexts[&ctx].legacy)
            }
            STREAM_PER_THREAD => {
                let ctx = self.current()?;
                let me = std::thread::current().id();
                if let Some(&s) = self.contexts[&ctx].per_thread.get(&me) {
                    return Ok(s);
                }
                let s = self.handle();
                self.streams
                    .insert(s, Stream::new(ctx, StreamKind::PerThread, 0));
                self.contexts
                    .get_mut(&ctx)
                    .unwrap()
                    .per_thread
                    .insert(me, s);
                Ok(s)
            }
            h => match self.streams.get(&h) {
                Some(s) if !s.destroyed => {
                    let c = self.context(s.ctx)?;
                    c.error.map_or(Ok(h), Err)
                }
                _ => Err(code::INVALID_HANDLE),
            },
        }
    }

    /// A stream that work is submitted to: it must belong to the current
    /// context, as the driver requires.
    pub fn submit_stream(&mut self, handle: u64) -> Res<u64> {
        let s = self.stream(handle)?;
        if Some(self.streams[&s].ctx) != current_context() {
            return Err(code::INVALID_HANDLE);
        }
        Ok(s)
    }

    /// Queues work on `stream`; returns its sequence number.
    pub fn submit(&mut self, stream: u64, work: Work, extra_deps: Vec<(u64, u64)>) -> u64 {
        self.seq += 1;
        let seq = self.seq;
        let s = &self.streams[&stream];
        let (ctx, kind) = (s.ctx, s.kind);
        let mut deps = extra_deps;
        // The legacy stream and the blocking streams wait for each other.
        match kind {
            StreamKind::Legacy => {
                count(|c| c.legacy_stream_ops += 1, &mut self.counters);
                for (&id, other) in &self.streams {
                    if other.ctx == ctx
                        && matches!(other.kind, StreamKind::Blocking | StreamKind::PerThread)
                        && other.last > other.done
                    {
                        deps.push((id, other.last));
                    }
                }
            }
            StreamKind::Blocking | StreamKind::PerThread => {
                let legacy = self.contexts[&ctx].legacy;
                let l = &self.streams[&legacy];
                if l.last > l.done {
                    deps.push((legacy, l.last));
                }
            }
            StreamKind::NonBlocking => {}
        }
        let s = self.streams.get_mut(&stream).unwrap();
        s.last = seq;
        s.queue.push_back(Pending { seq, deps, work });
        seq
    }

    /// Runs `stream`'s work up to `seq`, and only what that work waits for.
    pub fn run_until(&mut self, d: &Driver, stream: u64, seq: u64) {
        loop {
            let Some(s) = self.streams.get_mut(&stream) else {
                return;
            };
            if s.done >= seq {
                return;
            }
            let Some(p) = s.queue.pop_front() else { return };
            for &(dep, dseq) in &p.deps {
                self.run_until(d, dep, dseq);
            }
            self.run(d, stream, p);
        }
    }

    /// Runs `stream`'s work up to `target`. The context's streams take turns
    /// one item at a time (in the order they were made), whatever they hold,
    /// until `stream` is there: streams not ordered with each other
    /// interleave, as they may on a GPU, so two streams that share memory
    /// without synchronizing meet each other's writes. Each item runs after
    /// what it waits for.
    pub fn force(&mut self, d: &Driver, stream: u64, target: u64) {
        let ctx = self.streams.get(&stream).map(|s| s.ctx);
        self.interleave(d, ctx, |st| {
            st.streams.get(&stream).is_none_or(|s| s.done >= target)
        });
    }

    /// Runs all queued work of `ctx` (of every context: `None`). Contexts
    /// are independent; running only the one waited for keeps one
    /// context's timing out of another's.
    pub fn force_all(&mut self, d: &Driver, ctx: Option<u64>) {
        self.interleave(d, ctx, |st| {
            st.streams
                .values()
                .all(|s| s.queue.is_empty() || ctx.is_some_and(|c| s.ctx != c))
        });
    }

    fn interleave(&mut self, d: &Driver, ctx: Option<u64>, done: impl Fn(&State) -> bool) {
        let mut ids: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| ctx.is_none_or(|c| s.ctx == c))
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        while !done(self) {
            let mut progressed = false;
            for &id in &ids {
                if done(self) {
                    return;
                }
                let Some(p) = self.streams.get_mut(&id).and_then(|s| s.queue.pop_front()) else {
                    continue;
                };
                for &(dep, dseq) in &p.deps {
                    self.run_until(d, dep, dseq);
                }
                self.run(d, id, p);
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
    }

    /// Submits a free and runs it at once, after only what it waits for.
    pub fn free_async(&mut self, d: &Driver, stream: u64, ptr: u64) {
        let seq = self.submit(stream, Work::Free { ptr }, Vec::new());
        self.run_until(d, stream, seq);
    }

    pub fn stream_last(&self, stream: u64) -> u64 {
        self.streams[&stream].last
    }

    /// What waiting for `stream` waits for: its last work, and for the
    /// legacy stream the last work of every blocking stream of its context
    /// too, which it is ordered with.
    pub fn sync_point(&self, stream: u64) -> u64 {
        let s = &self.streams[&stream];
        if s.kind != StreamKind::Legacy {
            return s.last;
        }
        self.streams
            .values()
            .filter(|o| {
                o.ctx == s.ctx
                    && matches!(
                        o.kind,
                        StreamKind::Legacy | StreamKind::Blocking | StreamKind::PerThread
                    )
            })
            .map(|o| o.last)
            .max()
            .unwrap_or(s.last)
    }

    pub fn stream_pending(&self, stream: u64) -> bool {
        let s = &self.streams[&stream];
        s.last > s.done
    }

    pub fn host_sync(&mut self) {
        count(|c| c.host_syncs += 1, &mut self.counters);
    }

    pub fn counted(&mut self, f: impl Fn(&mut Counters) + Copy) {
        count(f, &mut self.counters);
    }

    /// Runs one work item of `stream`.
    fn run(&mut self, d: &Driver, stream: u64, p: Pending) {
        let ctx_id = self.streams[&stream].ctx;
        {
            let s = self.streams.get_mut(&stream).unwrap();
            s.done = p.seq;
        }
        let Some(ctx) = self.contexts.get(&ctx_id) else {
            return;
        };
        let device = ctx.device;
        // A context that faulted runs nothing more.
        if ctx.error.is_some() {
            if let Work::Free { ptr } = p.work {
                d.memory.free(None, ptr);
            }
            return;
        }
        let failure: Option<(CUresult, String)> = match p.work {
            Work::Launch {
                module,
                kernel,
                dims,
                params,
            } => {
                let k = &module.kernels[kernel];
                let view = View::new(&d.memory, device);
                match exec::launch(k, dims, &params, &view, d.config.workers) {
                    Ok(stats) => {
                        count(
                            move |c| c.instructions += stats.instructions,
                            &mut self.counters,
                        );
                        None
                    }
                    Err(f) => {
                        let code = match f.kind {
                            FaultKind::IllegalAddress => code::ILLEGAL_ADDRESS,
                            FaultKind::Misaligned => code::MISALIGNED_ADDRESS,
                            FaultKind::Deadlock => code::LAUNCH_TIMEOUT,
                            _ => code::LAUNCH_FAILED,
                        };
                        Some((code, f.message))
                    }
                }
            }
            Work::Upload { dst, data } => d.write_device(dst, &data).err(),
            Work::UploadPinned { dst, src, len } => {
                // SAFETY: the caller keeps page-locked memory alive until the
                // copy has run, as CUDA requires.
                let data = unsafe { std::slice::from_raw_parts(src.0 as *const u8, len) };
                d.write_device(dst, data).err()
            }
            Work::Download { dst, src, len } => {
                // SAFETY: as above; pageable destinations are written before
                // the submitting call returns.
                let out = unsafe { std::slice::from_raw_parts_mut(dst.0 as *mut u8, len) };
                d.read_device(src, out).err()
            }
            Work::Copy { dst, src, len } => d.copy_device(dst, src, len).err(),
            Work::Memset { dst, len, pattern } => d.fill_device(dst, len, &pattern).err(),
            Work::Free { ptr } => {
                d.memory.free(None, ptr);
                None
            }
            Work::Record { event } => {
                if let Some(e) = self.events.get_mut(&event)
                    && e.record.is_some_and(|(_, seq)| seq == p.seq)
                {
                    e.time = Some(Instant::now());
                }
                None
            }
            Work::Wait => None,
        };
        if let Some((code, message)) = failure {
            eprintln!(
                "cuda-emu: {}: {message}",
                error_name(code).unwrap_or("error")
            );
            if let Some(c) = self.contexts.get_mut(&ctx_id) {
                c.error = Some(code);
            }
        }
    }
}

impl Stream {
    fn new(ctx: u64, kind: StreamKind, priority: i32) -> Self {
        Stream {
            ctx,
            kind,
            priority,
            queue: VecDeque::new(),
            last: 0,
            done: 0,
            destroyed: false,
        }
    }
}

impl Driver {
    fn write_device(&self, dst: u64, data: &[u8]) -> Result<(), (CUresult, String)> {
        let (a, off) = self.memory.find(dst, data.len()).map_err(|m| {
            (
                code::ILLEGAL_ADDRESS,
                format!("copy of {} bytes to {dst:#x}: {m}", data.len()),
            )
        })?;
        a.write_bytes(off, data);
        Ok(())
    }

    fn read_device(&self, src: u64, out: &mut [u8]) -> Result<(), (CUresult, String)> {
        let (a, off) = self.memory.find(src, out.len()).map_err(|m| {
            (
                code::ILLEGAL_ADDRESS,
                format!("copy of {} bytes from {src:#x}: {m}", out.len()),
            )
        })?;
        a.read_bytes(off, out);
        Ok(())
    }

    fn copy_device(&self, dst: u64, src: u64, len: usize) -> Result<(), (CUresult, String)> {
        let (s, soff) = self.memory.find(src, len).map_err(|m| {
            (
                code::ILLEGAL_ADDRESS,
                format!("copy of {len} bytes from {src:#x}: {m}"),
            )
        })?;
        let (t, toff) = self.memory.find(dst, len).map_err(|m| {
            (
                code::ILLEGAL_ADDRESS,
                format!("copy of {len} bytes to {dst:#x}: {m}"),
            )
        })?;
        t.copy_from(toff, &s, soff, len);
        Ok(())
    }

    fn fill_device(&self, dst: u64, len: usize, pattern: &[u8]) -> Result<(), (CUresult, String)> {
        let (a, off) = self.memory.find(dst, len).map_err(|m| {
            (
                code::ILLEGAL_ADDRESS,
                format!("memset of {len} bytes at {dst:#x}: {m}"),
            )
        })?;
        a.fill(off, len, pattern);
        Ok(())
    }
}
