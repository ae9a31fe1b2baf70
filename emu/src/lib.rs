//! # cuda-emu
//!
//! An emulated CUDA device, for tests on machines without a GPU. Built as a
//! cdylib it stands in for the NVIDIA driver (`libcuda.so`): it implements
//! the driver API that cudarc calls, and runs a kernel by interpreting the
//! PTX that `cuModuleLoadData` receives, the text a real driver would
//! compile. It knows nothing of any library's kernels: it runs what the
//! module declares.
//!
//! What it checks, as compute-sanitizer would: every global and shared
//! access against the requested size of a live allocation and against its
//! natural alignment, reads of memory never written, races on shared memory
//! between barriers, warp collectives whose members do not meet, and
//! deadlocked barriers. A fault fails the launch with a sticky error, as on
//! a GPU, and a message on stderr names the kernel, the PTX line, the
//! thread, the block and the address.
//!
//! What only a GPU can show: what ptxas makes of the PTX (SASS, register
//! allocation, the contraction of an unrounded add and multiply into an
//! fma), timing, and real concurrency between blocks and streams. The
//! emulator runs blocks on the host's cores and streams in submission
//! order, both legal schedules among the many a GPU may take.
//!
//! The environment sets the machine: `CUDA_EMU_DEVICES` (default 2),
//! `CUDA_EMU_DRIVER_VERSION` (default 13000, which reads PTX ISA 9.0),
//! `CUDA_EMU_SM` (default 90), `CUDA_EMU_MEMORY_MB` (per device, default
//! 8192) and `CUDA_EMU_THREADS` (host threads per launch).

pub mod driver;
pub mod exec;
pub mod float;
pub mod memory;
pub mod ptx;
