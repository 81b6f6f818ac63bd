//! Memory-pressure levels with hysteresis.

use core::fmt;

use crate::frames::QueueCounts;

/// How short of memory the system is (XNU's `kVMPressure` levels and their encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum PressureLevel {
    /// Enough memory (1).
    Normal,
    /// Memory is getting short: caches should shrink (2).
    Warning,
    /// Memory is nearly exhausted: free everything possible (4).
    Critical,
}

impl PressureLevel {
    /// XNU's encoding: 1, 2 or 4.
    #[must_use]
    pub const fn code(self) -> u32 {
        match self {
            Self::Normal => 1,
            Self::Warning => 2,
            Self::Critical => 4,
        }
    }

    /// The word `memory_pressure` prints: `Normal`, `Warning` or `Critical`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
            Self::Critical => "Critical",
        }
    }
}

impl fmt::Display for PressureLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Thresholds, in percent. A level is entered below its `enter` threshold of available
/// memory (free + inactive + speculative pages) or at its compressor fullness, and left only
/// once memory is back above its `leave` threshold and the compressor below its `leave`
/// fullness, so the level does not flap around one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PressureThresholds {
    /// Available memory below which the level is at least Warning.
    pub warning_enter: u8,
    /// Available memory at or above which Warning returns to Normal.
    pub warning_leave: u8,
    /// Available memory below which the level is Critical.
    pub critical_enter: u8,
    /// Available memory at or above which Critical returns to Warning.
    pub critical_leave: u8,
    /// Compressor fullness at which the level is at least Warning.
    pub compressor_warning: u8,
    /// Compressor fullness at which the level is Critical (XNU: "nearing its limit").
    pub compressor_critical: u8,
}

impl Default for PressureThresholds {
    fn default() -> Self {
        Self {
            warning_enter: 15,
            warning_leave: 20,
            critical_enter: 5,
            critical_leave: 8,
            compressor_warning: 70,
            compressor_critical: 98,
        }
    }
}

/// Computes the level from the page queues and the compressor's fullness.
#[derive(Clone, Copy, Debug)]
pub struct PressureMonitor {
    level: PressureLevel,
    thresholds: PressureThresholds,
}

impl Default for PressureMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl PressureMonitor {
    /// A monitor at [`PressureLevel::Normal`] with the default thresholds.
    #[must_use]
    pub fn new() -> Self {
        Self::with_thresholds(PressureThresholds::default())
    }

    /// A monitor with `thresholds`.
    #[must_use]
    pub fn with_thresholds(thresholds: PressureThresholds) -> Self {
        Self {
            level: PressureLevel::Normal,
            thresholds,
        }
    }

    /// The current level.
    #[must_use]
    pub fn level(&self) -> PressureLevel {
        self.level
    }

    /// Available memory in percent of the managed pages (100 with none).
    #[must_use]
    pub fn available_percent(counts: &QueueCounts) -> u64 {
        let total = counts.total();
        if total == 0 {
            return 100;
        }
        (counts.free + counts.inactive + counts.speculative) * 100 / total
    }

    /// Recomputes the level; returns `(old, new)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm::frames::QueueCounts;
    /// use machvm::pressure::{PressureLevel, PressureMonitor};
    ///
    /// let mut m = PressureMonitor::new();
    /// let mut q = QueueCounts::default();
    /// q.free = 10;
    /// q.active = 90;
    /// assert_eq!(m.update(&q, 0), (PressureLevel::Normal, PressureLevel::Warning));
    /// q.free = 18; // above 15 % but below the 20 % needed to leave Warning
    /// q.active = 82;
    /// assert_eq!(m.update(&q, 0).1, PressureLevel::Warning);
    /// q.free = 3;
    /// q.active = 97;
    /// assert_eq!(m.update(&q, 0).1, PressureLevel::Critical);
    /// ```
    pub fn update(&mut self, counts: &QueueCounts, fullness: u8) -> (PressureLevel, PressureLevel) {
        let t = self.thresholds;
        let avail = Self::available_percent(counts);
        let old = self.level;
        let critical = avail < u64::from(t.critical_enter) || fullness >= t.compressor_critical;
        let warning = avail < u64::from(t.warning_enter) || fullness >= t.compressor_warning;
        let new = match old {
            _ if critical => PressureLevel::Critical,
            PressureLevel::Critical => {
                if avail >= u64::from(t.critical_leave)
                    && fullness < t.compressor_critical.saturating_sub(8)
                {
                    if avail >= u64::from(t.warning_leave)
                        && fullness < t.compressor_warning.saturating_sub(10)
                    {
                        PressureLevel::Normal
                    } else {
                        PressureLevel::Warning
                    }
                } else {
                    PressureLevel::Critical
                }
            }
            _ if warning => PressureLevel::Warning,
            PressureLevel::Warning => {
                if avail >= u64::from(t.warning_leave)
                    && fullness < t.compressor_warning.saturating_sub(10)
                {
                    PressureLevel::Normal
                } else {
                    PressureLevel::Warning
                }
            }
            _ => PressureLevel::Normal,
        };
        self.level = new;
        (old, new)
    }
}
