//! The memory checker: every violation fails the launch with a message that
//! names the kernel, the instruction, the thread, the block and the address.

mod common;

use common::{Device, expect_fault, module};
use cuda_emu::exec::FaultKind;

/// `out[i] = in[i + shift]` for i < n, one thread per element; f32.
const COPY: &str = "
.visible .entry copy(.param .u64 pin, .param .u64 pout, .param .u32 pn, .param .u32 pshift)
.maxntid 128, 1, 1
{
    .reg .pred %p;
    .reg .b32 %r<6>;
    .reg .f32 %f;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    ld.param.u32 %r1, [pn];
    ld.param.u32 %r5, [pshift];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.s32 %r2, %r2, %r3, %r4;
    setp.ge.u32 %p, %r2, %r1;
    @%p bra $done;
    add.s32 %r3, %r2, %r5;
    mul.wide.s32 %rd3, %r3, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.f32 %f, [%rd4];
    mul.wide.u32 %rd5, %r2, 4;
    add.s64 %rd6, %rd2, %rd5;
    st.global.f32 [%rd6], %f;
$done:
    ret;
}
";

fn floats(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
}

#[test]
fn an_exact_fit_runs() {
    let dev = Device::new();
    let m = module(COPY);
    let n = 300u64;
    let x = dev.upload(&floats(n as usize));
    let y = dev.alloc(4 * n as usize);
    dev.launch(&m, "copy", [3, 1, 1], [128, 1, 1], &[x, y, n, 0])
        .unwrap();
    assert_eq!(dev.download(y, 4 * n as usize), floats(n as usize));
}

#[test]
fn one_element_past_the_requested_size_is_illegal() {
    // 300 floats: 1200 bytes, which a GPU's allocator would round up to
    // 1280; the checker holds to the 1200 asked for.
    let dev = Device::new();
    let m = module(COPY);
    let x = dev.upload(&floats(300));
    let y = dev.alloc(1200);
    let f = expect_fault(
        dev.launch(&m, "copy", [3, 1, 1], [128, 1, 1], &[x, y, 300, 1]),
        FaultKind::IllegalAddress,
        &[
            "read of 4 bytes",
            "4 bytes past the end",
            "kernel `copy`",
            "ld.global.f32",
            "block (2, 0, 0)",
        ],
    );
    // The faulting thread is the one that reads x[300]: thread 43 of block 2.
    assert!(f.message.contains("thread (43, 0, 0)"), "{}", f.message);
}

#[test]
fn before_the_start_is_illegal() {
    let dev = Device::new();
    let m = module(COPY);
    let x = dev.upload(&floats(10));
    let y = dev.alloc(40);
    expect_fault(
        dev.launch(
            &m,
            "copy",
            [1, 1, 1],
            [128, 1, 1],
            &[x, y, 10, (-1i32) as u32 as u64],
        ),
        FaultKind::IllegalAddress,
        &["4 bytes before the start", "thread (0, 0, 0)"],
    );
}

#[test]
fn a_host_pointer_is_not_device_memory() {
    let dev = Device::new();
    let m = module(COPY);
    let host = floats(10);
    let y = dev.alloc(40);
    expect_fault(
        dev.launch(
            &m,
            "copy",
            [1, 1, 1],
            [16, 1, 1],
            &[host.as_ptr() as u64, y, 10, 0],
        ),
        FaultKind::IllegalAddress,
        &["in no device allocation"],
    );
}

#[test]
fn freed_memory_is_recognised() {
    let dev = Device::new();
    let m = module(COPY);
    let x = dev.upload(&floats(10));
    let y = dev.alloc(40);
    assert!(dev.memory.free(None, x));
    expect_fault(
        dev.launch(&m, "copy", [1, 1, 1], [16, 1, 1], &[x, y, 10, 0]),
        FaultKind::IllegalAddress,
        &["in freed allocation"],
    );
}

#[test]
fn another_devices_memory_is_illegal() {
    let dev = Device::new();
    let m = module(COPY);
    let x = dev.memory.alloc(1, 40).unwrap();
    let y = dev.alloc(40);
    expect_fault(
        dev.launch(&m, "copy", [1, 1, 1], [16, 1, 1], &[x, y, 10, 0]),
        FaultKind::IllegalAddress,
        &["memory of device 1"],
    );
}

#[test]
fn reading_memory_never_written_is_reported() {
    let dev = Device::new();
    let m = module(COPY);
    let x = dev.alloc(40); // allocated, never written
    let y = dev.alloc(40);
    expect_fault(
        dev.launch(&m, "copy", [1, 1, 1], [16, 1, 1], &[x, y, 10, 0]),
        FaultKind::Uninitialized,
        &["never written"],
    );
}

/// One 16-byte vector load per thread at `in + 16·i + offset`.
const VECTOR: &str = "
.visible .entry vec(.param .u64 pin, .param .u64 pout, .param .u64 poff)
{
    .reg .b32 %r<2>;
    .reg .f32 %f<5>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    ld.param.u64 %rd7, [poff];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 16;
    add.s64 %rd4, %rd1, %rd3;
    add.s64 %rd4, %rd4, %rd7;
    ld.global.v4.f32 {%f1, %f2, %f3, %f4}, [%rd4];
    add.s64 %rd5, %rd2, %rd3;
    st.global.v4.f32 [%rd5], {%f1, %f2, %f3, %f4};
    ret;
}
";

#[test]
fn vector_accesses_need_16_byte_alignment() {
    let dev = Device::new();
    let m = module(VECTOR);
    let x = dev.upload(&floats(68));
    let y = dev.alloc(256);
    dev.launch(&m, "vec", [1, 1, 1], [16, 1, 1], &[x, y, 0])
        .unwrap();
    assert_eq!(dev.download(y, 256), floats(64));
    // One element further: inside the allocation, but not 16-byte aligned.
    expect_fault(
        dev.launch(&m, "vec", [1, 1, 1], [16, 1, 1], &[x, y, 4]),
        FaultKind::Misaligned,
        &[
            "misaligned read of 16 bytes",
            "ld.global.v4.f32",
            "thread (0, 0, 0)",
        ],
    );
}

/// Shared memory: thread i writes buf[i] and reads buf[i + k].
const SHARED: &str = "
.visible .entry sh(.param .u64 pout, .param .u32 pk)
{
    .shared .align 4 .b8 buf[128];
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pout];
    ld.param.u32 %r7, [pk];
    mov.u32 %r1, %tid.x;
    shl.b32 %r2, %r1, 2;
    mov.u32 %r3, buf;
    add.s32 %r4, %r3, %r2;
    st.shared.u32 [%r4], %r1;
    bar.sync 0;
    shl.b32 %r5, %r7, 2;
    add.s32 %r4, %r4, %r5;
    ld.shared.u32 %r6, [%r4];
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r6;
    ret;
}
";

#[test]
fn shared_memory_is_bounds_and_initialization_checked() {
    let dev = Device::new();
    let m = module(SHARED);
    let y = dev.alloc(4 * 32);
    // 32 threads, buf has room for 32 words: reading buf[i + 0] is fine.
    dev.launch(&m, "sh", [1, 1, 1], [32, 1, 1], &[y, 0])
        .unwrap();
    // 16 threads write buf[0..16); reading buf[i + 16] reads words never written.
    expect_fault(
        dev.launch(&m, "sh", [1, 1, 1], [16, 1, 1], &[y, 16]),
        FaultKind::Uninitialized,
        &["shared read", "never written"],
    );
    // 32 threads reading buf[i + 1]: the last one reads past the 128 bytes.
    expect_fault(
        dev.launch(&m, "sh", [1, 1, 1], [32, 1, 1], &[y, 1]),
        FaultKind::IllegalAddress,
        &[
            "shared read of 4 bytes at 0x80",
            "outside the block's 128 bytes",
            "thread (31, 0, 0)",
        ],
    );
}

#[test]
fn a_parameter_read_past_its_size_is_illegal() {
    let m = module(
        ".visible .entry p(.param .u32 a, .param .u64 out) {
            .reg .b32 %r; .reg .b64 %rd;
            ld.param.u32 %r, [a+4];
            ld.param.u64 %rd, [out];
            st.global.u32 [%rd], %r;
            ret;
        }",
    );
    let dev = Device::new();
    let y = dev.alloc(4);
    expect_fault(
        dev.launch(&m, "p", [1, 1, 1], [1, 1, 1], &[1, y]),
        FaultKind::IllegalAddress,
        &["ld.param of 4 bytes at offset 4 of parameter `a` (4 bytes)"],
    );
}

#[test]
fn trap_fails_the_launch() {
    let m = module(".visible .entry t() { trap; ret; }");
    expect_fault(
        Device::new().launch(&m, "t", [1, 1, 1], [1, 1, 1], &[]),
        FaultKind::Trap,
        &["trap"],
    );
}

#[test]
fn the_lowest_failing_block_is_reported_whatever_the_worker_count() {
    let dev = Device::new();
    let m = module(COPY);
    let x = dev.upload(&floats(64));
    let y = dev.alloc(64 * 128 * 4);
    for workers in [1, 2, 4] {
        // Blocks 0 and up read past x's 64 floats from thread 64 of block 0 on.
        let f = dev
            .launch_on(
                0,
                &m,
                "copy",
                [64, 1, 1],
                [128, 1, 1],
                0,
                &[x, y, 64 * 128, 0],
                workers,
            )
            .unwrap_err();
        assert!(
            f.message.contains("block (0, 0, 0)") && f.message.contains("thread (64, 0, 0)"),
            "{}",
            f.message
        );
    }
}
