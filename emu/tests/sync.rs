//! Barriers, warp collectives and atomics: what blocks and warps share.

mod common;

use common::{Device, expect_fault, module};
use cuda_emu::exec::FaultKind;

/// A block sums its threads' values through a shared tree: 256 threads,
/// log2 steps, `bar.sync` between them, unless `MISSING` drops the step's.
fn tree(barrier_between_steps: bool) -> String {
    let bar = if barrier_between_steps {
        "bar.sync 0;"
    } else {
        ""
    };
    let mut steps = String::new();
    for (i, s) in [128, 64, 32, 16, 8, 4, 2, 1].iter().enumerate() {
        steps += &format!(
            "
    {bar}
    setp.lt.u32 %p, %r1, {s};
    @!%p bra $skip{i};
    ld.shared.u32 %r5, [%r4];
    ld.shared.u32 %r6, [%r4+{off}];
    add.s32 %r5, %r5, %r6;
    st.shared.u32 [%r4], %r5;
$skip{i}:",
            off = s * 4
        );
    }
    format!(
        ".visible .entry sum(.param .u64 pout)
.maxntid 256, 1, 1
{{
    .shared .align 4 .b8 buf[1024];
    .reg .pred %p;
    .reg .b32 %r<8>;
    .reg .b64 %rd<3>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    shl.b32 %r2, %r1, 2;
    mov.u32 %r3, buf;
    add.s32 %r4, %r3, %r2;
    add.s32 %r7, %r1, 1;
    st.shared.u32 [%r4], %r7;
    bar.sync 0;
    {steps}
    bar.sync 0;
    setp.ne.u32 %p, %r1, 0;
    @%p bra $end;
    ld.shared.u32 %r5, [buf];
    mov.u32 %r6, %ctaid.x;
    mul.wide.u32 %rd2, %r6, 4;
    add.s64 %rd1, %rd1, %rd2;
    st.global.u32 [%rd1], %r5;
$end:
    ret;
}}"
    )
}

#[test]
fn a_barrier_orders_the_block() {
    let dev = Device::new();
    let m = module(&tree(true));
    let out = dev.alloc(4 * 8);
    dev.launch(&m, "sum", [8, 1, 1], [256, 1, 1], &[out])
        .unwrap();
    let sums: Vec<u32> = dev
        .download(out, 32)
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(sums, vec![256 * 257 / 2; 8]);
}

#[test]
fn a_missing_barrier_is_a_race() {
    let dev = Device::new();
    let m = module(&tree(false));
    let out = dev.alloc(4);
    expect_fault(
        dev.launch(&m, "sum", [1, 1, 1], [256, 1, 1], &[out]),
        FaultKind::Race,
        &["since the last barrier", "kernel `sum`"],
    );
}

#[test]
fn threads_that_cannot_meet_are_a_deadlock() {
    // Even threads wait at barrier 0, odd ones at barrier 1.
    let m = module(
        ".visible .entry d() {
            .reg .pred %p; .reg .b32 %r<2>;
            mov.u32 %r0, %tid.x;
            and.b32 %r1, %r0, 1;
            setp.eq.u32 %p, %r1, 0;
            @%p bra $even;
            bar.sync 1;
            ret;
        $even:
            bar.sync 0;
            ret;
        }",
    );
    expect_fault(
        Device::new().launch(&m, "d", [1, 1, 1], [64, 1, 1], &[]),
        FaultKind::Deadlock,
        &["deadlock", "bar.sync"],
    );
}

#[test]
fn exited_threads_do_not_hold_a_barrier() {
    // Threads past 40 return before the barrier; the rest still meet.
    let m = module(
        ".visible .entry e(.param .u64 pout) {
            .reg .pred %p; .reg .b32 %r<2>; .reg .b64 %rd<3>;
            ld.param.u64 %rd0, [pout];
            mov.u32 %r0, %tid.x;
            setp.ge.u32 %p, %r0, 40;
            @%p bra $out;
            bar.sync 0;
            mul.wide.u32 %rd1, %r0, 4;
            add.s64 %rd2, %rd0, %rd1;
            st.global.u32 [%rd2], %r0;
        $out:
            ret;
        }",
    );
    let dev = Device::new();
    let out = dev.alloc(4 * 40);
    dev.launch(&m, "e", [1, 1, 1], [64, 1, 1], &[out]).unwrap();
}

/// Each thread's ballot of (tid odd) over the full mask, stored per thread.
const BALLOT: &str = ".visible .entry b(.param .u64 pout) {
    .reg .pred %p; .reg .b32 %r<4>; .reg .b64 %rd<3>;
    ld.param.u64 %rd0, [pout];
    mov.u32 %r0, %tid.x;
    and.b32 %r1, %r0, 1;
    setp.eq.u32 %p, %r1, 1;
    vote.sync.ballot.b32 %r2, %p, -1;
    mul.wide.u32 %rd1, %r0, 4;
    add.s64 %rd2, %rd0, %rd1;
    st.global.u32 [%rd2], %r2;
    ret;
}";

#[test]
fn a_ballot_over_a_partial_last_warp() {
    // 40 threads: a full warp and a last warp of 8 lanes, whose missing
    // lanes give 0 bits.
    let dev = Device::new();
    let m = module(BALLOT);
    let out = dev.alloc(4 * 40);
    dev.launch(&m, "b", [1, 1, 1], [40, 1, 1], &[out]).unwrap();
    let got: Vec<u32> = dev
        .download(out, 160)
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(got[..32].iter().all(|&b| b == 0xaaaa_aaaa), "{got:x?}");
    assert!(got[32..].iter().all(|&b| b == 0xaa), "{got:x?}");
}

#[test]
fn a_ballot_of_lanes_that_diverged_is_a_sync_error() {
    // Lanes 0-15 ballot at one instruction with mask 0xffffffff, lanes
    // 16-31 at another with mask 0x0000ffff: neither mask is met.
    let m = module(
        ".visible .entry v() {
            .reg .pred %p; .reg .b32 %r<3>;
            mov.u32 %r0, %laneid;
            setp.lt.u32 %p, %r0, 16;
            @%p bra $low;
            vote.sync.ballot.b32 %r1, %p, 65535;
            ret;
        $low:
            vote.sync.ballot.b32 %r2, %p, -1;
            ret;
        }",
    );
    expect_fault(
        Device::new().launch(&m, "v", [1, 1, 1], [32, 1, 1], &[]),
        FaultKind::WarpSync,
        &["lane 0 meets lane 16 at a different collective"],
    );
}

#[test]
fn vote_all_any_uni() {
    let m = module(
        ".visible .entry v(.param .u64 pout) {
            .reg .pred %p<5>; .reg .b32 %r<6>; .reg .b64 %rd<3>;
            ld.param.u64 %rd0, [pout];
            mov.u32 %r0, %laneid;
            setp.lt.u32 %p0, %r0, 64;
            setp.eq.u32 %p1, %r0, 3;
            vote.sync.all.pred %p2, %p0, -1;
            vote.sync.any.pred %p3, %p1, -1;
            vote.sync.uni.pred %p4, %p1, -1;
            selp.u32 %r1, 1, 0, %p2;
            selp.u32 %r2, 2, 0, %p3;
            selp.u32 %r3, 4, 0, %p4;
            add.s32 %r4, %r1, %r2;
            add.s32 %r4, %r4, %r3;
            mul.wide.u32 %rd1, %r0, 4;
            add.s64 %rd2, %rd0, %rd1;
            st.global.u32 [%rd2], %r4;
            ret;
        }",
    );
    let dev = Device::new();
    let out = dev.alloc(128);
    dev.launch(&m, "v", [1, 1, 1], [32, 1, 1], &[out]).unwrap();
    // all(true) and any(lane 3) hold; uni does not (one lane differs).
    assert!(
        dev.download(out, 128)
            .chunks(4)
            .all(|c| u32::from_le_bytes(c.try_into().unwrap()) == 3)
    );
}

#[test]
fn shuffles() {
    // Lane i holds 100 + i; each mode reads another lane.
    let m = module(
        ".visible .entry s(.param .u64 pout) {
            .reg .pred %p; .reg .b32 %r<8>; .reg .b64 %rd<3>;
            ld.param.u64 %rd0, [pout];
            mov.u32 %r0, %laneid;
            add.s32 %r1, %r0, 100;
            shfl.sync.down.b32 %r2|%p, %r1, 16, 31, -1;
            shfl.sync.up.b32 %r3, %r1, 1, 0, -1;
            shfl.sync.bfly.b32 %r4, %r1, 1, 31, -1;
            shfl.sync.idx.b32 %r5, %r1, 7, 31, -1;
            mul.wide.u32 %rd1, %r0, 16;
            add.s64 %rd2, %rd0, %rd1;
            st.global.v4.u32 [%rd2], {%r2, %r3, %r4, %r5};
            ret;
        }",
    );
    let dev = Device::new();
    let out = dev.alloc(32 * 16);
    dev.launch(&m, "s", [1, 1, 1], [32, 1, 1], &[out]).unwrap();
    let v: Vec<u32> = dev
        .download(out, 512)
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for lane in 0..32u32 {
        let r = &v[lane as usize * 4..][..4];
        let down = if lane + 16 < 32 {
            100 + lane + 16
        } else {
            100 + lane
        };
        let up = if lane >= 1 { 100 + lane - 1 } else { 100 };
        assert_eq!(r, [down, up, 100 + (lane ^ 1), 107], "lane {lane}");
    }
}

#[test]
fn atomics_from_blocks_in_parallel() {
    // Every thread of 64 blocks adds 1 (global, u32) and its index (u64).
    let m = module(
        ".visible .entry a(.param .u64 pc, .param .u64 ps) {
            .reg .b32 %r<4>; .reg .b64 %rd<4>;
            ld.param.u64 %rd0, [pc];
            ld.param.u64 %rd1, [ps];
            mov.u32 %r0, %ctaid.x;
            mov.u32 %r1, %ntid.x;
            mov.u32 %r2, %tid.x;
            mad.lo.s32 %r3, %r0, %r1, %r2;
            atom.global.add.u32 %r0, [%rd0], 1;
            cvt.u64.u32 %rd2, %r3;
            red.global.add.u64 [%rd1], %rd2;
            ret;
        }",
    );
    let dev = Device::new();
    let (c, s) = (dev.upload(&[0; 4]), dev.upload(&[0; 8]));
    dev.launch_on(0, &m, "a", [64, 1, 1], [128, 1, 1], 0, &[c, s], 4)
        .unwrap();
    let n = 64 * 128u64;
    assert_eq!(
        u32::from_le_bytes(dev.download(c, 4).try_into().unwrap()) as u64,
        n
    );
    assert_eq!(
        u64::from_le_bytes(dev.download(s, 8).try_into().unwrap()),
        n * (n - 1) / 2
    );
}

#[test]
fn shared_atomics_and_dynamic_shared_memory() {
    // Threads count themselves into dynamic shared memory, then thread 0
    // stores the count.
    let m = module(
        ".extern .shared .align 16 .b8 dyn[];
        .visible .entry c(.param .u64 pout) {
            .reg .pred %p; .reg .b32 %r<3>; .reg .b64 %rd;
            ld.param.u64 %rd, [pout];
            mov.u32 %r0, %tid.x;
            setp.ne.u32 %p, %r0, 0;
            @%p bra $wait;
            st.shared.u32 [dyn+12], 0;
        $wait:
            bar.sync 0;
            atom.shared.add.u32 %r1, [dyn+12], 1;
            bar.sync 0;
            @%p bra $end;
            ld.shared.u32 %r2, [dyn+12];
            st.global.u32 [%rd], %r2;
        $end:
            ret;
        }",
    );
    let dev = Device::new();
    let out = dev.alloc(4);
    dev.launch_on(0, &m, "c", [1, 1, 1], [96, 1, 1], 16, &[out], 1)
        .unwrap();
    assert_eq!(
        u32::from_le_bytes(dev.download(out, 4).try_into().unwrap()),
        96
    );
    // Without the 16 dynamic bytes, dyn+12 is outside the block's shared memory.
    expect_fault(
        dev.launch_on(0, &m, "c", [1, 1, 1], [96, 1, 1], 0, &[out], 1),
        FaultKind::IllegalAddress,
        &["outside the block's 0 bytes"],
    );
}
