//! Chi-square uniformity tests with fixed seeds.
//!
//! For every region type, 100,000 layouts are built and each region's chosen slot is put in one
//! of 64 buckets, twice: by its high-order position (`(slot - 1) * 64 / positions`) and by its
//! low-order bits (`(slot - 1) % 64`), which catches both a skewed range and a stuck low bit.
//! With 63 degrees of freedom the statistic must stay below 103.44 (p = 0.001). The same test is
//! then run on deliberately biased generators and a modulo-biased slide, which must fail it,
//! so the test is known to have teeth.

// A host test: std is the natural choice.
#![allow(clippy::std_instead_of_core)]

use machvm_addr::{PageSize, VaWidth, VirtAddr};
use machvm_aslr::{
    AslrRng, FitRequest, LayoutBuilder, LayoutConfig, RegionKind, SlideRequest, VaRange,
};
use rand_core::{Rng, TryCryptoRng, TryRng};

const DRAWS: u64 = 100_000;
const BUCKETS: u64 = 64;
/// The chi-square critical value for 63 degrees of freedom at p = 0.001.
const CRITICAL: f64 = 103.44;

/// Chi-square statistic of `counts` against buckets holding `sizes` of `n` equally likely
/// positions.
fn chi_square(counts: &[u64], sizes: &[u64], n: u64, draws: u64) -> f64 {
    counts
        .iter()
        .zip(sizes)
        .map(|(&c, &s)| {
            let e = draws as f64 * s as f64 / n as f64;
            (c as f64 - e).powi(2) / e
        })
        .sum()
}

/// Bucket sizes of the high-order bucketing of `n` positions.
fn high_sizes(n: u64) -> Vec<u64> {
    let lo = |b: u64| (u128::from(b) * u128::from(n)).div_ceil(u128::from(BUCKETS)) as u64;
    (0..BUCKETS).map(|b| lo(b + 1) - lo(b)).collect()
}

/// Bucket sizes of the low-order (mod 64) bucketing of `n` positions.
fn low_sizes(n: u64) -> Vec<u64> {
    (0..BUCKETS)
        .map(|b| n / BUCKETS + u64::from(b < n % BUCKETS))
        .collect()
}

/// Collects 0-based slot indices and checks both bucketings; returns the two statistics.
struct Buckets {
    n: u64,
    high: Vec<u64>,
    low: Vec<u64>,
    draws: u64,
}

impl Buckets {
    fn new(n: u64) -> Self {
        Self {
            n,
            high: vec![0; BUCKETS as usize],
            low: vec![0; BUCKETS as usize],
            draws: 0,
        }
    }

    fn add(&mut self, index: u64) {
        assert!(index < self.n, "index {index} outside 0..{}", self.n);
        let h = (u128::from(index) * u128::from(BUCKETS) / u128::from(self.n)) as usize;
        self.high[h] += 1;
        self.low[(index % BUCKETS) as usize] += 1;
        self.draws += 1;
    }

    fn stats(&self) -> (f64, f64) {
        (
            chi_square(&self.high, &high_sizes(self.n), self.n, self.draws),
            chi_square(&self.low, &low_sizes(self.n), self.n, self.draws),
        )
    }

    fn passes(&self) -> bool {
        let (h, l) = self.stats();
        h < CRITICAL && l < CRITICAL
    }
}

/// Builds `DRAWS` layouts of `config` with one seeded generator and checks every region type.
fn check_layouts<R: rand_core::CryptoRng>(
    config: LayoutConfig,
    rng: &mut R,
) -> Vec<(RegionKind, f64, f64)> {
    let builder = LayoutBuilder::new(config);
    let first = builder.build(rng).expect("default layout builds");
    let mut buckets: Vec<Buckets> = first
        .regions()
        .iter()
        .map(|r| Buckets::new(r.positions()))
        .collect();
    for _ in 0..DRAWS {
        let layout = builder.build(rng).expect("default layout builds");
        for (b, r) in buckets.iter_mut().zip(layout.regions()) {
            b.add(r.slot() - 1);
        }
    }
    RegionKind::ALL
        .iter()
        .zip(&buckets)
        .map(|(&k, b)| {
            let (h, l) = b.stats();
            (k, h, l)
        })
        .collect()
}

#[test]
#[cfg_attr(miri, ignore = "100,000 layouts per configuration")]
fn every_region_type_is_uniform() {
    let configs = [
        (LayoutConfig::x86_64(VaWidth::X86_64_4LEVEL).unwrap(), 0x11),
        (
            LayoutConfig::aarch64(VaWidth::AARCH64_48, PageSize::Size16KiB).unwrap(),
            0x22,
        ),
        (
            LayoutConfig::aarch64(VaWidth::AARCH64_39, PageSize::Size64KiB).unwrap(),
            0x33,
        ),
    ];
    for (config, seed) in configs {
        let mut rng = AslrRng::from_seed([seed; 32]);
        for (kind, h, l) in check_layouts(config, &mut rng) {
            println!(
                "{} {}-bit {}: {kind:?}: chi2 high {h:.1}, low {l:.1}",
                config.arch(),
                config.va().bits(),
                config.page()
            );
            assert!(h < CRITICAL, "{kind:?} high-order chi2 {h:.1}");
            assert!(l < CRITICAL, "{kind:?} low-order chi2 {l:.1}");
        }
    }
}

/// A generator that returns the larger of two `ChaCha20` outputs: a skewed distribution.
struct MaxOfTwo(AslrRng);

impl TryRng for MaxOfTwo {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.0.next_u32().max(self.0.next_u32()))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(self.0.next_u64().max(self.0.next_u64()))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}
// Marked cryptographic only so the layout builder accepts it: this test shows that the
// statistics catch a bad generator.
impl TryCryptoRng for MaxOfTwo {}

/// A generator whose output has a slightly stuck bit: bit 58 is forced to one in a quarter of
/// the outputs (so the top-bits distribution is off by a few percent, not grossly).
struct StickyBit(AslrRng);

impl TryRng for StickyBit {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.0.next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let x = self.0.next_u64();
        Ok(if x & 3 == 0 { x | 1 << 58 } else { x })
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}
impl TryCryptoRng for StickyBit {}

#[test]
#[cfg_attr(miri, ignore = "100,000 layouts")]
fn biased_generators_fail_the_same_test() {
    let config = LayoutConfig::x86_64(VaWidth::X86_64_4LEVEL).unwrap();
    for (name, results) in [
        (
            "max of two",
            check_layouts(config, &mut MaxOfTwo(AslrRng::from_seed([0x11; 32]))),
        ),
        (
            "sticky bit",
            check_layouts(config, &mut StickyBit(AslrRng::from_seed([0x11; 32]))),
        ),
    ] {
        for (kind, h, l) in results {
            println!("{name}: {kind:?}: chi2 high {h:.1}, low {l:.1}");
            assert!(
                h >= CRITICAL || l >= CRITICAL,
                "{name} generator passed for {kind:?} (chi2 {h:.1}/{l:.1})"
            );
        }
    }
}

/// The slide a naive implementation computes: `next_u64() % n`, biased when `n` does not
/// divide 2^64.
fn naive_modulo_index(rng: &mut AslrRng, n: u64) -> u64 {
    rng.next_u64() % n
}

#[test]
#[cfg_attr(miri, ignore = "100,000 slides")]
fn modulo_bias_is_caught_and_rejection_sampling_is_not_biased() {
    // 3 * 2^61 positions: 2^64 = 2n + 2^62, so under the modulo the first 2^62 indices (two
    // thirds) have three preimages and the rest two.
    // (No address-space window has that many positions, so the sampler every slide uses is
    // called directly.)
    let n: u64 = 3 << 61;
    let mut ours = Buckets::new(n);
    let mut naive = Buckets::new(n);
    let mut rng = AslrRng::from_seed([0x44; 32]);
    for _ in 0..DRAWS {
        ours.add(machvm_aslr::slide::uniform_below(&mut rng, n).unwrap());
        naive.add(naive_modulo_index(&mut rng, n));
    }
    assert!(ours.passes(), "rejection sampling: {:?}", ours.stats());
    assert!(!naive.passes(), "modulo: {:?}", naive.stats());
    println!(
        "n = 3 * 2^61: ours {:?}, naive modulo {:?}",
        ours.stats(),
        naive.stats()
    );

    // The same through a real slide request with a non-power-of-two count.
    let w = VaRange::new(VirtAddr::new(0x1_0000_0000), (3 << 30) + (1 << 20)).unwrap();
    let req = SlideRequest::new(w, 1 << 20, 1 << 12).unwrap();
    assert_eq!(req.positions(), 3 << 18);
    let mut b = Buckets::new(req.positions());
    for _ in 0..DRAWS {
        let s = req.slide(&mut rng).unwrap();
        b.add((s.offset() >> 12) - 1);
    }
    assert!(b.passes(), "{:?}", b.stats());
}

#[test]
#[cfg_attr(miri, ignore = "100,000 placements")]
fn random_fit_is_uniform_over_positions_not_gaps() {
    // Gaps of very different sizes: 1, 7, 56 and 960 positions of 4 KiB (1024 in all).
    let page = 0x1000u64;
    let mut gaps = Vec::new();
    let mut start = 0x10_0000u64;
    for pages in [1u64, 7, 56, 960] {
        gaps.push(VaRange::new(VirtAddr::new(start), pages * page).unwrap());
        start += pages * page + 0x10_0000;
    }
    let req = FitRequest::new(page, page).unwrap();
    assert_eq!(req.positions(gaps.iter().copied()), Ok(1024));
    // Global position index of a base.
    let index = |base: u64| -> u64 {
        let mut before = 0;
        for g in &gaps {
            if g.contains(VirtAddr::new(base)) {
                return before + (base - g.start().as_u64()) / page;
            }
            before += g.len() / page;
        }
        panic!("{base:#x} outside every gap");
    };
    let mut rng = AslrRng::from_seed([0x55; 32]);
    let mut ours = Buckets::new(1024);
    let mut per_gap = Buckets::new(1024);
    for _ in 0..DRAWS {
        let p = req.place(gaps.iter().copied(), &mut rng).unwrap();
        ours.add(index(p.base().as_u64()));
        // The naive random fit: a uniform gap, then a uniform position in it.
        let g = gaps[machvm_aslr::slide::uniform_below(&mut rng, 4).unwrap() as usize];
        let k = machvm_aslr::slide::uniform_below(&mut rng, g.len() / page).unwrap();
        per_gap.add(index(g.start().as_u64() + k * page));
    }
    assert!(ours.passes(), "{:?}", ours.stats());
    assert!(!per_gap.passes(), "{:?}", per_gap.stats());
}
