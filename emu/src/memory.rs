//! Device memory: allocations in an address range of their own, checked on
//! every access against the size that was asked for, not a rounded-up one.
//!
//! Device `d`'s allocations live at `DEVICE_BASE + d·DEVICE_SPAN` and up,
//! addresses no host pointer has (bit 60 set), so a host pointer passed as a
//! device pointer is an illegal address, as on a GPU. Addresses are never
//! reused, so a freed allocation stays recognisable for the life of the
//! process. A bit per byte records whether it was ever written: reading one
//! that was not is reported, as compute-sanitizer's initcheck does.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

pub const DEVICE_BASE: u64 = 1 << 60;
pub const DEVICE_SPAN: u64 = 1 << 52;
/// Generic addresses of the block's shared memory: `cvta.shared` adds this.
pub const SHARED_WINDOW: u64 = 1 << 59;
/// cudaMalloc's alignment.
const ALIGN: u64 = 256;
/// Space left between allocations, so an overrun lands in no allocation.
const GAP: u64 = 1 << 16;

/// One allocation's bytes and which of them were ever written.
pub struct Alloc {
    pub base: u64,
    pub size: usize,
    pub device: usize,
    words: Box<[AtomicU64]>,
    written: Box<[AtomicU64]>,
    freed: AtomicBool,
}

impl fmt::Debug for Alloc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "allocation {:#x} of {} bytes on device {}",
            self.base, self.size, self.device
        )
    }
}

fn byte_mask(len: usize) -> u64 {
    if len >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * len)) - 1
    }
}

fn bit_mask(len: usize) -> u64 {
    if len >= 64 {
        u64::MAX
    } else {
        (1u64 << len) - 1
    }
}

impl Alloc {
    fn new(base: u64, size: usize, device: usize) -> Self {
        let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
        Alloc {
            base,
            size,
            device,
            words: zeros(size.div_ceil(8)),
            written: zeros(size.div_ceil(64)),
            freed: AtomicBool::new(false),
        }
    }

    pub fn is_freed(&self) -> bool {
        self.freed.load(Relaxed)
    }

    /// Reads `len` ≤ 8 bytes at `off`, naturally aligned.
    pub fn load(&self, off: usize, len: usize) -> u64 {
        let shift = 8 * (off % 8);
        (self.words[off / 8].load(Relaxed) >> shift) & byte_mask(len)
    }

    /// Writes `len` ≤ 8 bytes at `off`, naturally aligned.
    pub fn store(&self, off: usize, len: usize, value: u64) {
        let shift = 8 * (off % 8);
        let m = byte_mask(len) << shift;
        let word = &self.words[off / 8];
        if len == 8 {
            word.store(value, Relaxed);
        } else {
            let _ = word.fetch_update(Relaxed, Relaxed, |w| {
                Some((w & !m) | ((value << shift) & m))
            });
        }
        self.mark_written(off, len);
    }

    /// An atomic read-modify-write of `len` (4 or 8) bytes; returns the old value.
    pub fn update(&self, off: usize, len: usize, f: impl Fn(u64) -> u64) -> u64 {
        let shift = 8 * (off % 8);
        let m = byte_mask(len) << shift;
        let word = &self.words[off / 8];
        let mut old = 0;
        let _ = word.fetch_update(Relaxed, Relaxed, |w| {
            old = (w & m) >> shift;
            Some((w & !m) | ((f(old) << shift) & m))
        });
        self.mark_written(off, len);
        old
    }

    fn mark_written(&self, off: usize, len: usize) {
        // Accesses are naturally aligned and at most 8 bytes: one word of bits.
        self.written[off / 64].fetch_or(bit_mask(len) << (off % 64), Relaxed);
    }

    pub fn is_written(&self, off: usize, len: usize) -> bool {
        let m = bit_mask(len) << (off % 64);
        self.written[off / 64].load(Relaxed) & m == m
    }

    /// The first byte in `off..off + len` never written, if any.
    pub fn first_unwritten(&self, off: usize, len: usize) -> Option<usize> {
        (off..off + len).find(|&i| self.written[i / 64].load(Relaxed) & (1 << (i % 64)) == 0)
    }

    pub fn write_bytes(&self, off: usize, src: &[u8]) {
        let mut i = 0;
        while i < src.len() {
            let at = off + i;
            if at.is_multiple_of(8) && i + 8 <= src.len() {
                let v = u64::from_le_bytes(src[i..i + 8].try_into().unwrap());
                self.words[at / 8].store(v, Relaxed);
                i += 8;
            } else {
                let shift = 8 * (at % 8);
                let m = 0xffu64 << shift;
                let b = (src[i] as u64) << shift;
                let _ = self.words[at / 8].fetch_update(Relaxed, Relaxed, |w| Some((w & !m) | b));
                i += 1;
            }
        }
        self.mark_range(off, src.len());
    }

    pub fn fill(&self, off: usize, len: usize, pattern: &[u8]) {
        let bytes: Vec<u8> = pattern.iter().copied().cycle().take(len).collect();
        self.write_bytes(off, &bytes);
    }

    pub fn read_bytes(&self, off: usize, dst: &mut [u8]) {
        let mut i = 0;
        while i < dst.len() {
            let at = off + i;
            let w = self.words[at / 8].load(Relaxed);
            if at.is_multiple_of(8) && i + 8 <= dst.len() {
                dst[i..i + 8].copy_from_slice(&w.to_le_bytes());
                i += 8;
            } else {
                dst[i] = (w >> (8 * (at % 8))) as u8;
                i += 1;
            }
        }
    }

    /// Copies `len` bytes from `src` at `src_off`, written bits included.
    pub fn copy_from(&self, off: usize, src: &Alloc, src_off: usize, len: usize) {
        let mut buf = vec![0u8; len];
        src.read_bytes(src_off, &mut buf);
        self.write_bytes(off, &buf);
        // Bytes the source never had stay unwritten in the copy.
        for i in 0..len {
            if src.written[(src_off + i) / 64].load(Relaxed) & (1 << ((src_off + i) % 64)) == 0 {
                self.written[(off + i) / 64].fetch_and(!(1 << ((off + i) % 64)), Relaxed);
            }
        }
    }

    fn mark_range(&self, off: usize, len: usize) {
        let mut i = off;
        let end = off + len;
        while i < end {
            if i.is_multiple_of(64) && i + 64 <= end {
                self.written[i / 64].store(u64::MAX, Relaxed);
                i += 64;
            } else {
                self.written[i / 64].fetch_or(1 << (i % 64), Relaxed);
                i += 1;
            }
        }
    }
}

/// Where an address points, for messages.
#[derive(Debug, Clone)]
pub enum Miss {
    /// Inside a live allocation but past its end (or before its start).
    OutOfBounds {
        alloc: String,
        base: u64,
        size: usize,
    },
    Freed {
        base: u64,
        size: usize,
    },
    OtherDevice {
        device: usize,
    },
    Nowhere,
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Miss::OutOfBounds { alloc, .. } => write!(f, "outside {alloc}"),
            Miss::Freed { base, size } => {
                write!(f, "in freed allocation {base:#x} of {size} bytes")
            }
            Miss::OtherDevice { device } => {
                write!(f, "in memory of device {device}, not this device's")
            }
            Miss::Nowhere => write!(f, "in no device allocation (a host pointer?)"),
        }
    }
}

#[derive(Default)]
struct Heap {
    next: u64,
    used: usize,
    live: BTreeMap<u64, Arc<Alloc>>,
    freed: BTreeMap<u64, usize>,
}

/// Every device's allocations.
pub struct Memory {
    heaps: Mutex<Vec<Heap>>,
    capacity: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum AllocError {
    Zero,
    OutOfMemory,
}

impl Memory {
    pub fn new(devices: usize, capacity: usize) -> Self {
        Memory {
            heaps: Mutex::new((0..devices).map(|_| Heap::default()).collect()),
            capacity,
        }
    }

    pub fn alloc(&self, device: usize, size: usize) -> Result<u64, AllocError> {
        if size == 0 {
            return Err(AllocError::Zero);
        }
        let mut heaps = self.heaps.lock().unwrap();
        let heap = &mut heaps[device];
        if heap.used.saturating_add(size) > self.capacity {
            return Err(AllocError::OutOfMemory);
        }
        let start = DEVICE_BASE + device as u64 * DEVICE_SPAN + GAP;
        let base = heap.next.max(start);
        let end = base + (size as u64).next_multiple_of(ALIGN) + GAP;
        if end > DEVICE_BASE + (device as u64 + 1) * DEVICE_SPAN {
            return Err(AllocError::OutOfMemory);
        }
        heap.next = end;
        heap.used += size;
        heap.live
            .insert(base, Arc::new(Alloc::new(base, size, device)));
        Ok(base)
    }

    /// Frees the allocation that starts at `base`; false if there is none.
    pub fn free(&self, device: Option<usize>, base: u64) -> bool {
        let mut heaps = self.heaps.lock().unwrap();
        let Some(d) = device_of(base).filter(|&d| d < heaps.len() && device.is_none_or(|x| x == d))
        else {
            return false;
        };
        let heap = &mut heaps[d];
        match heap.live.remove(&base) {
            Some(a) => {
                a.freed.store(true, Relaxed);
                heap.used -= a.size;
                heap.freed.insert(base, a.size);
                true
            }
            None => false,
        }
    }

    /// The live allocation holding `[addr, addr + len)`, on any device.
    pub fn find(&self, addr: u64, len: usize) -> Result<(Arc<Alloc>, usize), Miss> {
        let heaps = self.heaps.lock().unwrap();
        let Some(d) = device_of(addr).filter(|&d| d < heaps.len()) else {
            return Err(Miss::Nowhere);
        };
        find_in(&heaps[d], addr, len)
    }

    /// Why an access on `device` at `addr` found no allocation.
    pub fn explain(&self, device: usize, addr: u64, len: usize) -> Miss {
        let heaps = self.heaps.lock().unwrap();
        match device_of(addr).filter(|&d| d < heaps.len()) {
            None => Miss::Nowhere,
            Some(d) if d != device => Miss::OtherDevice { device: d },
            Some(d) => find_in(&heaps[d], addr, len).err().unwrap_or(Miss::Nowhere),
        }
    }

    /// The live allocations of `device`, by address, for a launch.
    pub fn snapshot(&self, device: usize) -> Vec<Arc<Alloc>> {
        self.heaps.lock().unwrap()[device]
            .live
            .values()
            .cloned()
            .collect()
    }

    pub fn used(&self, device: usize) -> usize {
        self.heaps.lock().unwrap()[device].used
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

pub fn device_of(addr: u64) -> Option<usize> {
    addr.checked_sub(DEVICE_BASE)
        .map(|o| (o / DEVICE_SPAN) as usize)
}

fn find_in(heap: &Heap, addr: u64, len: usize) -> Result<(Arc<Alloc>, usize), Miss> {
    if let Some((_, a)) = heap.live.range(..=addr).next_back() {
        let off = addr - a.base;
        if off
            .checked_add(len as u64)
            .is_some_and(|end| end <= a.size as u64)
        {
            return Ok((a.clone(), off as usize));
        }
        if off < a.size as u64 + GAP {
            return Err(Miss::OutOfBounds {
                alloc: format!("{a:?}"),
                base: a.base,
                size: a.size,
            });
        }
    }
    if let Some((&base, &size)) = heap.freed.range(..=addr).next_back()
        && addr < base + size as u64 + GAP
    {
        return Err(Miss::Freed { base, size });
    }
    // Just before an allocation: an underrun.
    if let Some((_, a)) = heap.live.range(addr..).next()
        && a.base - addr < GAP
    {
        return Err(Miss::OutOfBounds {
            alloc: format!("{a:?}"),
            base: a.base,
            size: a.size,
        });
    }
    Err(Miss::Nowhere)
}

/// A launch's view of its device's memory: the allocations live when it
/// started, searched by address, with the last one hit remembered.
pub struct View<'m> {
    pub device: usize,
    allocs: Vec<Arc<Alloc>>,
    memory: &'m Memory,
}

impl<'m> View<'m> {
    pub fn new(memory: &'m Memory, device: usize) -> Self {
        View {
            device,
            allocs: memory.snapshot(device),
            memory,
        }
    }

    /// The allocation and offset of `[addr, addr + len)`; `hint` is the
    /// index of the allocation the caller hit last.
    #[inline]
    pub fn locate(&self, addr: u64, len: usize, hint: &mut usize) -> Result<(&Alloc, usize), Miss> {
        if let Some(a) = self.allocs.get(*hint) {
            let off = addr.wrapping_sub(a.base);
            if off < a.size as u64 && off + len as u64 <= a.size as u64 && !a.is_freed() {
                return Ok((a, off as usize));
            }
        }
        let i = self.allocs.partition_point(|a| a.base <= addr);
        if i > 0 {
            let a = &self.allocs[i - 1];
            let off = addr - a.base;
            if off + len as u64 <= a.size as u64 && !a.is_freed() {
                *hint = i - 1;
                return Ok((a, off as usize));
            }
        }
        Err(self.memory.explain(self.device, addr, len))
    }
}
