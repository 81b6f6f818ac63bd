//! Gating, retries and health checks of the entropy sources against mocked CPUs.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::*;
use crate::arch::RngFeatures;

/// A CPU whose instructions return scripted results (`None` = the hardware said "no value");
/// an exhausted script keeps failing. Counts every attempt.
struct MockCpu {
    features: RngFeatures,
    seed: VecDeque<Option<u64>>,
    rand: VecDeque<Option<u64>>,
    seed_calls: u32,
    rand_calls: u32,
}

impl MockCpu {
    fn new(features: RngFeatures) -> Self {
        Self {
            features,
            seed: VecDeque::new(),
            rand: VecDeque::new(),
            seed_calls: 0,
            rand_calls: 0,
        }
    }

    /// Scripts `n` distinct good values for the seed (`which = 0`) or DRBG instruction.
    fn good(mut self, which: usize, n: u64) -> Self {
        let q = if which == SEED {
            &mut self.seed
        } else {
            &mut self.rand
        };
        let base = if which == SEED { 0x1000 } else { 0x9000_0000 };
        q.extend((1..=n).map(|i| Some(base + i * 0x0101_0101)));
        self
    }

    fn script(mut self, which: usize, values: &[Option<u64>]) -> Self {
        let q = if which == SEED {
            &mut self.seed
        } else {
            &mut self.rand
        };
        q.extend(values.iter().copied());
        self
    }
}

impl HwRng for MockCpu {
    fn features(&self) -> RngFeatures {
        self.features
    }

    fn seed_attempt(&mut self) -> Option<u64> {
        // Like the real implementations: never "execute" an absent instruction.
        assert!(
            self.features.has_seed(),
            "seed instruction used without its feature bit"
        );
        self.seed_calls += 1;
        self.seed.pop_front().flatten()
    }

    fn rand_attempt(&mut self) -> Option<u64> {
        assert!(
            self.features.has_rand(),
            "rand instruction used without its feature bit"
        );
        self.rand_calls += 1;
        self.rand.pop_front().flatten()
    }
}

fn x86(seed: bool, rand: bool) -> RngFeatures {
    RngFeatures::new(RngIsa::X86_64, seed, rand)
}

#[test]
fn no_instruction_is_no_entropy() {
    for features in [
        RngFeatures::from_cpuid(0x16, 0, 0),
        RngFeatures::from_id_aa64isar0(0),
    ] {
        let mut hw = HwEntropy::new(MockCpu::new(features));
        let err = hw.seed().unwrap_err();
        assert!(matches!(err, AslrError::NoEntropy { .. }), "{err:?}");
        assert_eq!(hw.hw().seed_calls + hw.hw().rand_calls, 0);
    }
}

#[test]
fn cpuid_gating_selects_rdrand_only() {
    // CPUID says RDRAND only: the seed instruction is never touched (the mock asserts).
    let cpu = MockCpu::new(RngFeatures::from_cpuid(0x16, 1 << 30, 0)).good(RAND, 4);
    let mut hw = HwEntropy::new(cpu);
    assert_eq!(hw.kind(), SourceKind::Rdrand);
    hw.seed().unwrap();
    assert_eq!(hw.last_used(), Some(SourceKind::Rdrand));
    assert_eq!((hw.hw().seed_calls, hw.hw().rand_calls), (0, 4));
}

#[test]
fn seed_instruction_is_preferred() {
    let cpu = MockCpu::new(x86(true, true)).good(SEED, 4).good(RAND, 4);
    let mut hw = HwEntropy::new(cpu);
    assert_eq!(hw.kind(), SourceKind::Rdseed);
    let seed = hw.seed().unwrap();
    assert_eq!(hw.last_used(), Some(SourceKind::Rdseed));
    assert_eq!((hw.hw().seed_calls, hw.hw().rand_calls), (4, 0));
    assert_eq!(
        &seed.as_bytes()[..8],
        &(0x1000u64 + 0x0101_0101).to_le_bytes()
    );
}

#[test]
fn aarch64_gating_names_rndr() {
    let cpu = MockCpu::new(RngFeatures::from_id_aa64isar0(1 << 60)).good(SEED, 4);
    let mut hw = HwEntropy::new(cpu);
    assert_eq!(hw.kind(), SourceKind::Rndrrs);
    hw.seed().unwrap();
    assert_eq!(hw.last_used(), Some(SourceKind::Rndrrs));
    // RNDRRS runs dry: RNDR takes over after the seed retries.
    let cpu = MockCpu::new(RngFeatures::from_id_aa64isar0(1 << 60)).good(RAND, 4);
    let mut hw = HwEntropy::new(cpu).with_retries(3, 10);
    hw.seed().unwrap();
    assert_eq!(hw.last_used(), Some(SourceKind::Rndr));
    assert_eq!(hw.hw().seed_calls, 4 * 3);
}

#[test]
fn transient_failures_are_retried_within_the_bound() {
    // Nine failures then a value, four times: every word arrives on the tenth attempt.
    let mut script = Vec::new();
    for i in 1..=4u64 {
        script.extend([None; 9]);
        script.push(Some(0x5555_0000 + i));
    }
    let cpu = MockCpu::new(x86(false, true)).script(RAND, &script);
    let mut hw = HwEntropy::new(cpu);
    hw.seed().unwrap();
    assert_eq!(hw.hw().rand_calls, 40);
}

#[test]
fn retries_are_bounded() {
    // Ten failures: RDRAND gives up after exactly RAND_RETRIES attempts.
    let cpu = MockCpu::new(x86(false, true)).script(RAND, &[None; 10]);
    let mut hw = HwEntropy::new(cpu);
    assert_eq!(
        hw.seed(),
        Err(AslrError::NoEntropy {
            source: SourceKind::Rdrand
        })
    );
    assert_eq!(hw.hw().rand_calls, RAND_RETRIES);
    let cpu = MockCpu::new(x86(true, false));
    let mut hw = HwEntropy::new(cpu);
    assert_eq!(
        hw.seed(),
        Err(AslrError::NoEntropy {
            source: SourceKind::Rdseed
        })
    );
    assert_eq!(hw.hw().seed_calls, SEED_RETRIES);
}

#[test]
fn all_ones_latches_a_health_failure() {
    // The broken-after-resume signature: success with all ones, forever.
    let cpu = MockCpu::new(x86(false, true)).script(RAND, &[Some(u64::MAX); 64]);
    let mut hw = HwEntropy::new(cpu);
    let want = Err(AslrError::EntropyHealth {
        source: SourceKind::Rdrand,
        failure: HealthFailure::AllOnes,
    });
    assert_eq!(hw.seed(), want);
    // Latched: not even tried again.
    let calls = hw.hw().rand_calls;
    assert_eq!(hw.seed(), want);
    assert_eq!(hw.hw().rand_calls, calls);
    assert_eq!(hw.health(), [None, Some(HealthFailure::AllOnes)]);
}

#[test]
fn zero_and_repeated_outputs_fail_health_checks() {
    let cpu = MockCpu::new(x86(false, true)).script(RAND, &[Some(0)]);
    assert_eq!(
        HwEntropy::new(cpu).seed(),
        Err(AslrError::EntropyHealth {
            source: SourceKind::Rdrand,
            failure: HealthFailure::AllZeros
        })
    );
    let cpu = MockCpu::new(x86(false, true)).script(RAND, &[Some(42), Some(42)]);
    assert_eq!(
        HwEntropy::new(cpu).seed(),
        Err(AslrError::EntropyHealth {
            source: SourceKind::Rdrand,
            failure: HealthFailure::Repeated
        })
    );
}

#[test]
fn a_stuck_seed_instruction_falls_back_to_the_healthy_drbg() {
    let cpu = MockCpu::new(x86(true, true))
        .script(SEED, &[Some(7), Some(7)])
        .good(RAND, 4);
    let mut hw = HwEntropy::new(cpu);
    hw.seed().unwrap();
    assert_eq!(hw.health(), [Some(HealthFailure::Repeated), None]);
    assert_eq!(hw.last_used(), Some(SourceKind::Rdrand));
    assert_eq!(hw.kind(), SourceKind::Rdrand);
}

#[test]
fn a_failed_seed_returns_no_partial_material() {
    // Two good words, then nothing: the call fails as a whole.
    let cpu = MockCpu::new(x86(false, true)).good(RAND, 2);
    let mut hw = HwEntropy::new(cpu);
    assert!(hw.seed().is_err());
    assert_eq!(hw.last_used(), None);
}

#[test]
fn boot_seed_is_one_shot_and_validated() {
    let mut s = BootSeed::new(b"eight by").unwrap();
    assert!(s.is_available());
    let a = s.seed().unwrap();
    assert!(!s.is_available());
    assert_eq!(
        s.seed(),
        Err(AslrError::NoEntropy {
            source: SourceKind::BootSeed
        })
    );
    // Deterministic: same bytes, same seed; different bytes or lengths differ.
    assert_eq!(BootSeed::new(b"eight by").unwrap().seed().unwrap(), a);
    assert_ne!(BootSeed::new(b"eight bz").unwrap().seed().unwrap(), a);
    assert_ne!(BootSeed::new(b"eight by\0").unwrap().seed().unwrap(), a);
    assert_eq!(
        BootSeed::new(&[1; 7]).unwrap_err(),
        AslrError::SeedTooShort { len: 7, min: 8 }
    );
    assert_eq!(BootSeed::new(&[0xff; 48]).unwrap_err(), AslrError::WeakSeed);
    assert_eq!(BootSeed::new(&[0; 8]).unwrap_err(), AslrError::WeakSeed);
    // Long seeds: every chunk matters.
    let mut long = [0x5au8; 100];
    let x = BootSeed::new(&long).unwrap().seed().unwrap();
    long[99] ^= 1;
    assert_ne!(BootSeed::new(&long).unwrap().seed().unwrap(), x);
}

#[test]
fn seed_debug_hides_the_bytes() {
    let s = Seed::new([0xab; 32]);
    assert_eq!(alloc::format!("{s:?}"), "Seed(..)");
}

/// The real instructions of this machine, when it has them (not under miri, which cannot run
/// `CPUID`/`RDRAND`).
#[cfg(target_arch = "x86_64")]
#[test]
#[cfg_attr(miri, ignore = "miri cannot execute CPUID or RDRAND")]
fn host_hardware_source_works_or_says_no_entropy() {
    let mut hw = HwEntropy::new(crate::arch::X86Rng::detect());
    let f = hw.hw().features();
    match hw.seed() {
        Ok(a) => {
            assert!(f.has_seed() || f.has_rand());
            let b = hw.seed().unwrap();
            assert_ne!(a, b);
        }
        Err(e) => assert!(
            !(f.has_seed() || f.has_rand()) || matches!(e, AslrError::EntropyHealth { .. }),
            "{e:?} with {f:?}"
        ),
    }
}
